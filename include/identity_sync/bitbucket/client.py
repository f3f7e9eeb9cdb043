"""Bitbucket Data Center admin REST client (``/rest/api/1.0``), Basic auth as a service account.

Paging follows ``nextPageStart`` and guards against ``isLastPage: false`` without it (BSERV-12725).
Errors become :class:`BitbucketError`, which tells an entity-missing 404 (``errors`` envelope) from a
route-missing 404 (no envelope: wrong base URL or version).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import requests

from ..http import ApiError, HttpSettings, make_session

log = logging.getLogger(__name__)

API = "/rest/api/1.0"
MAX_LIMIT = 1000


class BitbucketError(ApiError):
    def __init__(self, status: int, message: str, exception_name: str | None, method: str,
                 path: str, has_envelope: bool) -> None:
        super().__init__("Bitbucket", status, message, method, path)
        self.exception_name = exception_name
        self.has_envelope = has_envelope

    @property
    def entity_missing(self) -> bool:
        return self.status == 404 and self.has_envelope

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.has_envelope


class BitbucketClient:
    def __init__(self, base_url: str, username: str, password: str, *,
                 settings: HttpSettings | None = None, session: requests.Session | None = None,
                 verify: bool | str = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.settings = settings or HttpSettings()
        self.session = session or make_session(self.settings, verify)
        self.session.auth = (username, password)
        self.session.headers.update({"Accept": "application/json",
                                     "X-Atlassian-Token": "no-check"})
        self.requests_made = 0

    # -- transport -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: Any = None,
                json: Any = None) -> requests.Response:
        resp = self.session.request(method, f"{self.base_url}{API}{path}", params=params,
                                    json=json, timeout=self.settings.timeout)
        self.requests_made += 1
        if resp.status_code >= 400:
            raise _error(resp, method, path)
        return resp

    def iter_pages(self, path: str, params: dict[str, Any] | None = None,
                   limit: int = MAX_LIMIT) -> Iterator[dict[str, Any]]:
        start = 0
        while True:
            page = self.request("GET", path, params={**(params or {}), "start": start,
                                                     "limit": limit}).json()
            yield from page.get("values", [])
            if page.get("isLastPage", True):
                return
            next_start = page.get("nextPageStart")
            if next_start is None or next_start <= start:
                raise BitbucketError(200, f"paging of {path} stalled at start={start}", None,
                                     "GET", path, True)
            start = next_start

    # -- reads ---------------------------------------------------------------------------------
    def list_users(self) -> Iterator[dict[str, Any]]:
        return self.iter_pages("/admin/users")

    def list_groups(self) -> Iterator[str]:
        return (g["name"] for g in self.iter_pages("/admin/groups"))

    def group_members(self, group: str) -> Iterator[dict[str, Any]]:
        return self.iter_pages("/admin/groups/more-members", {"context": group})

    def group_permissions(self) -> Iterator[dict[str, Any]]:
        return self.iter_pages("/admin/permissions/groups")

    def user_permissions(self) -> Iterator[dict[str, Any]]:
        return self.iter_pages("/admin/permissions/users")

    def find_user(self, name: str) -> dict[str, Any] | None:
        """Exact (case-insensitive) lookup; the API only offers a substring filter."""
        for user in self.iter_pages("/admin/users", {"filter": name}):
            if user["name"].casefold() == name.casefold():
                return user
        return None

    # -- writes --------------------------------------------------------------------------------
    def create_user(self, name: str, display_name: str, email: str, *,
                    notify: bool = False) -> None:
        params: dict[str, Any] = {"name": name, "displayName": display_name,
                                  "emailAddress": email, "addToDefaultGroup": "false"}
        if notify:
            params["notify"] = "true"
        else:
            # Users sign in through SSO; an unguessable password keeps the local login closed.
            params["password"] = secrets.token_urlsafe(24)
        self.request("POST", "/admin/users", params=params)

    def update_user(self, name: str, display_name: str, email: str) -> dict[str, Any]:
        body = {"name": name, "displayName": display_name, "email": email}
        return self.request("PUT", "/admin/users", json=body).json()

    def rename_user(self, name: str, new_name: str) -> dict[str, Any]:
        return self.request("POST", "/admin/users/rename",
                            json={"name": name, "newName": new_name}).json()

    def delete_user(self, name: str) -> None:
        self.request("DELETE", "/admin/users", params={"name": name})

    def create_group(self, name: str) -> None:
        self.request("POST", "/admin/groups", params={"name": name})

    def set_group_permission(self, group: str, permission: str) -> None:
        self.request("PUT", "/admin/permissions/groups",
                     params={"name": group, "permission": permission})

    def revoke_user_permission(self, name: str) -> None:
        self.request("DELETE", "/admin/permissions/users", params={"name": name})

    def add_users_to_group(self, group: str, users: list[str]) -> None:
        self.request("POST", "/admin/groups/add-users", json={"group": group, "users": users})

    def remove_user_from_group(self, user: str, group: str) -> None:
        # context is the user, itemName the group (the REST docs example swaps them: BSERV-13706)
        self.request("POST", "/admin/users/remove-group", json={"context": user, "itemName": group})


def _error(resp: requests.Response, method: str, path: str) -> BitbucketError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        first = errors[0]
        message = "; ".join(str(e.get("message", "")) for e in errors)
        return BitbucketError(resp.status_code, message, first.get("exceptionName"), method, path,
                              True)
    text = (body or {}).get("message") if isinstance(body, dict) else None
    message = text or resp.text[:200] or resp.reason
    if resp.status_code == 404:
        message = f"{message} (no such REST route: check the base URL and Bitbucket version)"
    return BitbucketError(resp.status_code, message, None, method, path, False)
