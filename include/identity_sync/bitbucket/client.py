"""Bitbucket Data Center admin REST client (``/rest/api/1.0``), Basic auth as a service account.

Paging follows ``nextPageStart`` and guards against ``isLastPage: false`` without it (BSERV-12725);
a page without a boolean ``isLastPage`` is an error, never taken as the last page.
Errors become :class:`BitbucketError`, which tells an entity-missing 404 (``errors`` envelope) from a
route-missing 404 (no envelope: wrong base URL or version), and says in plain words what a 401,
403 or 409 usually means. Sending, pacing and retrying are :mod:`.transport`'s job; creates pass
a read-back so a create that timed out is looked up before it is sent again.
"""

from __future__ import annotations

import base64
import json as jsonlib
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote as url_quote

import requests

from ..http import ApiError, HttpSettings, make_plain_session, redact
from .transport import Transport

log = logging.getLogger(__name__)

API = "/rest/api/1.0"
MAX_LIMIT = 1000


class BitbucketError(ApiError):
    """``status`` is None when no answer came (timeouts, resets) after every retry."""

    def __init__(self, status: int | None, message: str, exception_name: str | None,
                 method: str, path: str, has_envelope: bool) -> None:
        super().__init__("Bitbucket", status, message, method, path)
        self.exception_name = exception_name
        self.has_envelope = has_envelope

    def __str__(self) -> str:
        """The server's message plus what the status usually means, for a person to act on."""
        hint = HINTS.get(self.status or 0)
        if hint is None or self.licence_limit or (self.status == 404 and not self.has_envelope):
            return super().__str__()
        return f"{super().__str__()} ({hint})"

    @property
    def entity_missing(self) -> bool:
        return self.status == 404 and self.has_envelope

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.has_envelope

    @property
    def licence_limit(self) -> bool:
        """403 because the change would license more users than the licence allows. Bitbucket's
        exact text is unknown (reference §11); every known wording mentions the licen[cs]e."""
        return self.status == 403 and "licen" in self.message.lower()


class BitbucketClient:
    def __init__(self, base_url: str, username: str, password: str, *,
                 settings: HttpSettings | None = None, session: requests.Session | None = None,
                 verify: bool | str = True,
                 on_secret: Callable[[str], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        # Told every secret this client makes up (the initial passwords), before it is sent:
        # the Airflow hook passes Airflow's ``mask_secret``. The client itself never lets its
        # secrets into an error text (see :func:`identity_sync.http.redact`).
        self.on_secret = on_secret
        basic = base64.b64encode(f"{username}:{password}".encode()).decode() if password else ""
        self._secrets = (password, basic)
        self.settings = settings or HttpSettings()
        self.session = session or make_plain_session(self.settings, verify)
        self.session.auth = (username, password)
        self.session.headers.update({"Accept": "application/json",
                                     "X-Atlassian-Token": "no-check"})
        self.transport = Transport(self.session, self.settings)
        self.preflight_report: Any = None  # set by :meth:`preflight`

    @property
    def requests_made(self) -> int:
        """HTTP requests sent, retries included."""
        return int(self.transport.stats["attempts"])

    # -- transport -----------------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: Any = None,
                json: Any = None) -> requests.Response:
        resp = self._send(method, path, params=params, json=json)
        assert resp is not None  # only a read-back ends without an answer
        return resp

    def _send(self, method: str, path: str, *, params: Any = None, json: Any = None,
              read_back: Callable[[], bool] | None = None,
              secret: str | None = None) -> requests.Response | None:
        """The answer, or None when ``read_back`` showed the write landed despite no answer.
        ``secret`` (a parameter's value) is kept out of the error text like the password."""
        sent = self.transport.send(method, f"{self.base_url}{API}{path}", params=params,
                                   json=json, read_back=read_back)
        if sent.response is None:
            if sent.read_back:
                return None
            # requests' ConnectionError repeats the whole URL, query string included
            failure = redact(str(sent.failure), (*self._secrets, secret))
            raise BitbucketError(None, f"no answer: {failure}", None, method, path, False)
        if sent.response.status_code >= 400:
            raise _error(sent.response, method, path, (*self._secrets, secret))
        return sent.response

    def request_json(self, method: str, path: str, *, params: Any = None,
                     json: Any = None) -> Any:
        """The answer's JSON body, or a :class:`BitbucketError` that says what came instead (an
        HTML login or proxy page, another content type, broken or absurdly nested JSON)."""
        return parse_json(self.request(method, path, params=params, json=json), method, path)

    def preflight(self) -> Any:
        """Read the rate-limit settings and the service account; pace to match; warn when the
        account is not allow-listed. Runs once per client (see :mod:`.preflight`)."""
        from .preflight import run_preflight

        if self.preflight_report is None:
            self.preflight_report = run_preflight(self)
        return self.preflight_report

    def use_preflight(self, report: Any) -> None:
        """Take a preflight another client of the same run already made (its three reads say
        the same thing minutes later): pace to it without asking Bitbucket again.

        The pacing starts from an empty bucket, not a full one: the run's earlier batches have
        been spending the server's bucket, so a fresh burst would meet 429s."""
        from .preflight import pace

        self.preflight_report = report
        pace(self, report)
        if self.transport.limiter is not None:
            self.transport.limiter.tokens = 0.0

    def share_rate_limit(self, clients: int) -> None:
        """``clients`` clients (this one included) send as this account at once: each keeps to
        its share of the server's bucket so that together they stay under it."""
        self.transport.share_rate(clients)

    def iter_pages(self, path: str, params: dict[str, Any] | None = None,
                   limit: int = MAX_LIMIT) -> Iterator[dict[str, Any]]:
        start = 0
        while True:
            page = self.request_json("GET", path, params={**(params or {}), "start": start,
                                                          "limit": limit})
            if not isinstance(page, dict) or not isinstance(page.get("values", []), list):
                raise BitbucketError(200, f"{path} answered something that is not a page of "
                                     "values", None, "GET", path, False)
            last = page.get("isLastPage")
            if not isinstance(last, bool):  # a proxy that strips it would leave a partial state
                found = _clip(repr(last), 40) if "isLastPage" in page else "absent"
                raise BitbucketError(200, f"{path} page at start={start} has no boolean "
                                     f"isLastPage ({found}); cannot tell whether more pages "
                                     "follow, refusing a partial listing", None, "GET", path,
                                     False)
            yield from page.get("values", [])
            if last:
                return
            next_start = page.get("nextPageStart")
            if (isinstance(next_start, bool) or not isinstance(next_start, int)
                    or next_start <= start):
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

    def user_permissions(self, name_filter: str | None = None) -> Iterator[dict[str, Any]]:
        """Users holding a global permission (``name_filter``: a substring of their names)."""
        return self.iter_pages("/admin/permissions/users",
                               {"filter": name_filter} if name_filter else None)

    def user_groups(self, name: str) -> Iterator[dict[str, Any]]:
        """The groups the user is a member of."""
        return self.iter_pages("/admin/users/more-members", {"context": name})

    def find_user(self, name: str) -> dict[str, Any] | None:
        """Exact (case-insensitive) lookup; the API only offers a substring filter."""
        for user in self.iter_pages("/admin/users", {"filter": name}):
            if user["name"].casefold() == name.casefold():
                return user
        return None

    def group_exists(self, name: str) -> bool:
        return any(g["name"].casefold() == name.casefold()
                   for g in self.iter_pages("/admin/groups", {"filter": name}))

    def licensed_users(self) -> Iterator[dict[str, Any]]:
        """Everyone holding LICENSED_USER or more, directly or through a group."""
        return self.iter_pages("/users", {"permission": "LICENSED_USER"})

    def rate_limit_settings(self) -> dict[str, Any]:
        return self.request_json("GET", "/admin/rate-limit/settings")

    def user_rate_limits(self, name: str) -> dict[str, Any] | None:
        """The user's own rate-limit entry (allow-listed or custom), None if they have none."""
        for entry in self.iter_pages("/admin/rate-limit/settings/users", {"filter": name}):
            if entry.get("user", {}).get("name", "").casefold() == name.casefold():
                return entry
        return None

    def allow_list(self, slug: str) -> dict[str, Any]:
        """Exempt a user from rate limiting (what an administrator does once for the sync)."""
        path = f"/admin/rate-limit/settings/users/{url_quote(slug, safe='')}"
        return self.request_json("PUT", path,
                                 json={"whitelisted": True})

    # -- writes --------------------------------------------------------------------------------
    def create_user(self, name: str, display_name: str, email: str, *,
                    notify: bool = False) -> bool:
        """Create without the default group. Returns True when the request got no answer but
        the user was found on reading back (the create landed, or the user existed already)."""
        params: dict[str, Any] = {"name": name, "displayName": display_name,
                                  "emailAddress": email, "addToDefaultGroup": "false"}
        password = None
        if notify:
            params["notify"] = "true"
        else:
            # Users sign in through SSO; an unguessable password keeps the local login closed.
            password = params["password"] = secrets.token_urlsafe(24)
            if self.on_secret is not None:
                self.on_secret(password)
        return self._send("POST", "/admin/users", params=params, secret=password,
                          read_back=lambda: self.find_user(name) is not None) is None

    def update_user(self, name: str, display_name: str, email: str) -> dict[str, Any]:
        body = {"name": name, "displayName": display_name, "email": email}
        return self.request_json("PUT", "/admin/users", json=body)

    def rename_user(self, name: str, new_name: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def landed() -> bool:
            found.update(self.find_user(new_name) or {})
            return bool(found) and (new_name.casefold() == name.casefold()
                                    or self.find_user(name) is None)

        resp = self._send("POST", "/admin/users/rename", json={"name": name, "newName": new_name},
                          read_back=landed)
        return found if resp is None else parse_json(resp, "POST", "/admin/users/rename")

    def delete_user(self, name: str) -> None:
        self.request("DELETE", "/admin/users", params={"name": name})

    def create_group(self, name: str, *,
                     on_read_back: Callable[[], None] | None = None) -> bool:
        """True when the group was found on reading back after an unanswered create.
        ``on_read_back`` is told whenever an attempt went unanswered and was read back, so a
        409 after it can be told apart from a group somebody else made."""
        def landed() -> bool:
            if on_read_back is not None:
                on_read_back()
            return self.group_exists(name)

        return self._send("POST", "/admin/groups", params={"name": name},
                          read_back=landed) is None

    def delete_group(self, name: str) -> None:
        self.request("DELETE", "/admin/groups", params={"name": name})

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


MAX_JSON_DEPTH = 64  # Bitbucket's answers nest a handful of levels; more is not Bitbucket


def parse_json(resp: requests.Response, method: str, path: str) -> Any:
    """Decode a JSON answer, refusing what is not one with a sentence a person can act on."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype and "json" not in ctype:  # none at all: try it (some test doubles send none)
        what = _html_title(resp.text) if "html" in ctype else ""
        raise BitbucketError(resp.status_code, f"answered with content type {ctype!r}"
                             f"{what}, not JSON: a proxy, login page or wrong base URL?", None,
                             method, path, False)
    try:
        body = jsonlib.loads(resp.content)
    except (ValueError, RecursionError) as exc:
        raise BitbucketError(resp.status_code, f"answer is not valid JSON ({_clip(str(exc), 80)})",
                             None, method, path, False) from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise BitbucketError(resp.status_code, f"answer nests deeper than {MAX_JSON_DEPTH} "
                             "levels: not a Bitbucket answer", None, method, path, False)
    return body


def _depth(value: Any, limit: int = MAX_JSON_DEPTH + 1) -> int:
    """Nesting depth, counted iteratively and only up to ``limit`` (cheap on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and depth > deepest:
            deepest = depth
            if deepest >= limit:
                return deepest
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) \
            else ()
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return deepest


def _clip(text: str, limit: int = 200) -> str:
    """One line, printable, bounded: what an error message may carry from a server's body."""
    flat = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _html_title(text: str) -> str:
    found = re.search(r"<title[^>]*>(.*?)</title>", text[:65536], re.IGNORECASE | re.DOTALL)
    return f" (an HTML page titled {_clip(found.group(1), 80)!r})" if found else " (an HTML page)"


def _error(resp: requests.Response, method: str, path: str,
           secrets: tuple[str | None, ...] = ()) -> BitbucketError:
    """The error an answer of 400 or more means; ``secrets`` never echoed from its body."""
    try:
        body = parse_json(resp, method, path)
    except BitbucketError:
        body = None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        message = _clip(redact("; ".join(str(e.get("message", "")) for e in errors
                                         if isinstance(e, dict)), secrets), 500)
        name = first.get("exceptionName")
        return BitbucketError(resp.status_code, message, name if isinstance(name, str) else None,
                              method, path, True)
    text = (body or {}).get("message") if isinstance(body, dict) else None
    ctype = resp.headers.get("Content-Type", "").lower()
    raw = _html_title(resp.text).strip(" ()") if "html" in ctype else resp.text
    message = _clip(redact(str(text or raw or resp.reason or ""), secrets))
    if resp.status_code == 404:
        message = f"{message} (no such REST route: check the base URL and Bitbucket version)"
    return BitbucketError(resp.status_code, message, None, method, path, False)


# What a status usually means on the admin API (reference §1, §12), appended to the message.
HINTS = {
    400: "Bitbucket refused the request as invalid",
    404: "no such user or group",
    401: "bad credentials, or the service account lacks global ADMIN: Bitbucket answers 401 for "
         "both; also check for a CAPTCHA lock after failed logins",
    403: "licence limit reached, or the target has a higher permission level than the service "
         "account",
    409: "conflict: already exists, or the change would lower the service account's own "
         "permission",
    429: "rate limited: allow-list the service account in Bitbucket's rate limiting",
}
