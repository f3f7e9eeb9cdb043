"""IDCS admin REST (SCIM) client: OAuth client-credentials token, paging, errors.

Quirks handled (see the reference): ``itemsPerPage`` echoes the requested size, so pages advance by
``len(Resources)``; ``Resources`` is absent on an empty page; tokens have no refresh token, so a
new one is fetched before ``expires_in`` runs out or after a 401.

A listing is all or nothing: a page that is not JSON (an HTML error page from a proxy, a cut-off
body, a wrong content type), a ``totalResults`` that changes or is exceeded, or a page repeating
records already seen raises :class:`PartialExtractError` with one readable line, never a parse
traceback, so the run stops before anything is planned from partial data.
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
    """A listing ended before ``totalResults`` items were seen, or a page could not be trusted:
    never sync from partial data."""


JSON_TYPES = ("application/json", "application/scim+json")
SNIPPET = 80


def _snippet(text: str) -> str:
    """The start of a body, on one line, for an error message."""
    flat = " ".join(text.split())
    return flat[:SNIPPET] + ("..." if len(flat) > SNIPPET else "")


def parse_json_page(resp: requests.Response, path: str) -> dict[str, Any]:
    """The JSON object of a 200 answer, or PartialExtractError saying what came instead."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    where = f"IDCS GET {path}"
    if ctype and ctype not in JSON_TYPES and not ctype.endswith("+json"):  # absent: try it
        raise PartialExtractError(
            f"{where} answered 200 with content type {ctype!r}, not JSON "
            f"(body starts {_snippet(resp.text)!r}); refusing to sync from it")
    try:
        body = resp.json()
    except ValueError:
        raise PartialExtractError(
            f"{where} answered 200 with a body that is not valid JSON ({len(resp.content)} "
            f"bytes, starts {_snippet(resp.text)!r}); refusing to sync from it") from None
    if not isinstance(body, dict):
        raise PartialExtractError(f"{where} answered with a JSON {type(body).__name__}, "
                                  "not an object; refusing to sync from it")
    return body


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
            try:
                resp = self.session.get(url, params=params, headers=headers,
                                        timeout=self.settings.timeout)
            except requests.RequestException as exc:  # after the session's own retries
                raise ApiError("IDCS", None, _one_line(exc), "GET", path) from exc
            self.requests_made += 1
            if resp.status_code == 401 and attempt == 1:
                log.info("IDCS token refused; fetching a new one")
                continue
            if resp.status_code != 200:
                raise ApiError("IDCS", resp.status_code, _scim_error(resp), "GET", path,
                               resp.headers.get("X-ORACLE-DMS-ECID", ""))
            return parse_json_page(resp, path)
        raise AssertionError("unreachable")

    def iter_resources(self, path: str, params: dict[str, Any] | None = None,
                       page_size: int = MAX_PAGE) -> Iterator[dict[str, Any]]:
        """Every resource of a listing, page by page; raises if the listing comes up short,
        overflows, changes its total or repeats itself (see :func:`check_page`)."""
        start, seen, total = 1, 0, None
        ids: set[str] = set()
        where = f"IDCS {path} (filter {(params or {}).get('filter', 'none')!r})"
        while True:
            body = self.get(path, {**(params or {}), "startIndex": start, "count": page_size})
            total, resources = check_page(body, where, start, total, ids)
            yield from resources
            seen += len(resources)
            start += len(resources)
            if seen > total:
                raise PartialExtractError(
                    f"{where} returned {seen} results but totalResults says {total}; "
                    "refusing to sync from a listing that contradicts itself")
            if seen == total:
                return
            if not resources:
                raise PartialExtractError(
                    f"{where} stopped at {seen} of {total} results; refusing to sync partial data"
                )


def check_page(body: dict[str, Any], where: str, start: int, total: int | None,
               ids: set[str]) -> tuple[int, list[dict[str, Any]]]:
    """Validate one listing page against the first: same ``totalResults``, a list of objects,
    no id seen on an earlier page. Returns the total and the resources."""
    raw_total, resources = body.get("totalResults"), body.get("Resources") or []
    if isinstance(raw_total, bool) or not isinstance(raw_total, int) or raw_total < 0:
        raise PartialExtractError(f"{where} page at startIndex {start} has no usable "
                                  f"totalResults ({raw_total!r}); refusing to sync from it")
    if total is not None and raw_total != total:
        raise PartialExtractError(
            f"{where} totalResults changed from {total} to {raw_total} at startIndex {start}: "
            "the listing is inconsistent (changing underneath, or lying); run again")
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise PartialExtractError(f"{where} page at startIndex {start} has Resources that are "
                                  "not a list of objects; refusing to sync from it")
    page_ids = [r["id"] for r in resources if isinstance(r.get("id"), str)]
    repeated = ids.intersection(page_ids)
    if repeated:
        raise PartialExtractError(
            f"{where} page at startIndex {start} repeats {len(repeated)} records of earlier "
            f"pages (e.g. id {sorted(repeated)[0]}); refusing to sync from a broken listing")
    ids.update(page_ids)
    return raw_total, resources


def _one_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


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
