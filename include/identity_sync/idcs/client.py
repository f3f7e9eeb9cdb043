"""IDCS admin REST (SCIM) client: OAuth client-credentials token, paging, errors.

Quirks handled (see the reference): ``itemsPerPage`` echoes the requested size, so pages advance by
``len(Resources)``; ``Resources`` is absent on an empty page; tokens have no refresh token, so a
new one is fetched before ``expires_in`` runs out or after a 401.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests

from ..http import ApiError, HttpSettings, make_session

log = logging.getLogger(__name__)

SCOPE = "urn:opc:idm:__myscopes__"
MAX_PAGE = 1000
TOKEN_MARGIN_SECONDS = 60


class PartialExtractError(RuntimeError):
    """A listing ended before ``totalResults`` items were seen: never sync from partial data."""


class IdcsClient:
    def __init__(self, base_url: str, client_id: str, client_secret: str, *, scope: str = SCOPE,
                 settings: HttpSettings | None = None, session: requests.Session | None = None,
                 verify: bool | str = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id, self._secret, self.scope = client_id, client_secret, scope
        self.settings = settings or HttpSettings()
        self.session = session or make_session(self.settings, verify)
        self._token: str | None = None
        self._token_expiry = 0.0
        self._lock = threading.Lock()
        self.requests_made = 0

    def token(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or time.monotonic() >= self._token_expiry:
                resp = self.session.post(
                    f"{self.base_url}/oauth2/v1/token",
                    data={"grant_type": "client_credentials", "scope": self.scope},
                    auth=(self.client_id, self._secret),
                    timeout=self.settings.timeout,
                )
                self.requests_made += 1
                if resp.status_code != 200:
                    raise ApiError("IDCS", resp.status_code, _oauth_error(resp), "POST",
                                   "/oauth2/v1/token")
                body = resp.json()
                self._token = body["access_token"]
                ttl = float(body.get("expires_in", 3600))
                self._token_expiry = time.monotonic() + max(ttl - TOKEN_MARGIN_SECONDS, ttl / 2)
            return self._token

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.token(force=attempt == 2)}",
                       "Accept": "application/scim+json, application/json"}
            resp = self.session.get(url, params=params, headers=headers,
                                    timeout=self.settings.timeout)
            self.requests_made += 1
            if resp.status_code == 401 and attempt == 1:
                log.info("IDCS token refused; fetching a new one")
                continue
            if resp.status_code != 200:
                raise ApiError("IDCS", resp.status_code, _scim_error(resp), "GET", path,
                               resp.headers.get("X-ORACLE-DMS-ECID", ""))
            return resp.json()
        raise AssertionError("unreachable")

    def iter_resources(self, path: str, params: dict[str, Any] | None = None,
                       page_size: int = MAX_PAGE) -> Iterator[dict[str, Any]]:
        """Every resource of a listing, page by page; raises if the listing comes up short."""
        start, seen, total = 1, 0, None
        while True:
            body = self.get(path, {**(params or {}), "startIndex": start, "count": page_size})
            total = int(body.get("totalResults", 0)) if total is None else total
            resources = body.get("Resources") or []
            yield from resources
            seen += len(resources)
            start += len(resources)
            if seen >= total:
                return
            if not resources:
                raise PartialExtractError(
                    f"IDCS {path} stopped at {seen} of {total} results (filter "
                    f"{(params or {}).get('filter', 'none')!r}); refusing to sync partial data"
                )


def _scim_error(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason
    return str(body.get("detail") or body.get("error_description") or body)[:300]


def _oauth_error(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason
    return f"{body.get('error', 'error')}: {body.get('error_description', '')}".strip()
