"""IDCS admin REST (SCIM) client: OAuth client-credentials token, retries, paging, metrics.

Quirks handled (see the reference): ``itemsPerPage`` echoes the requested size, so pages advance by
``len(Resources)``; ``Resources`` is absent on an empty page; tokens have no refresh token, so a
new one is fetched shortly before ``expires_in`` runs out, or once after a 401 (revoked token).

Retries are this client's own loop, not urllib3's, so that they can be counted, bounded and
explained: 429, 502, 503, 504, timeouts and connection resets are retried with exponential
backoff and jitter (``Retry-After`` honoured when present), a 500 only ``retries_500`` times, and
the total sleep of one request never exceeds ``retry_max_wait``. Giving up raises
:class:`IdcsApiError`, one line that carries the ``X-ORACLE-DMS-ECID`` Oracle support asks for.
The access token and the client secret never reach a log line or an error message.

A listing is all or nothing: a page that is not JSON (an HTML error page from a proxy, a cut-off
body, a wrong content type), a ``totalResults`` that is exceeded, or a page repeating records
already seen raises :class:`PartialExtractError` with one readable line, never a parse traceback,
so the run stops before anything is planned from partial data. A ``totalResults`` that changes
mid-listing (users created or deleted while we page) is transient, not partial data: the listing
is read again from the start once, after a backoff, then :class:`ListingChangedError` is raised,
which the Airflow read tasks retry with backoff (a genuinely partial listing fails at once).
A group's member pages are checked against the member count IDCS reports for the group (the
``totalResults`` of ``Users?filter=groups.value eq "<id>"&count=0``): a short page is not the end.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn
from urllib.parse import quote as url_quote

import requests

from ..bitbucket.transport import BodyLimits, HostileResponse, read_body
from ..http import (
    RETRY_STATUSES,
    SERVER_ERROR,
    ApiError,
    HttpSettings,
    backoff_delay,
    make_plain_session,
    parse_retry_after,
    redact,
)
from .metrics import ExtractMetrics, endpoint_key

log = logging.getLogger(__name__)

SCOPE = "urn:opc:idm:__myscopes__"
MAX_PAGE = 1000  # the largest ``count`` IDCS accepts
MEMBER_PAGE = 10_000  # members per group request: IDCS refuses more than 10,000 in one answer
USERS_PATH = "/admin/v1/Users"
# A listing that changed underneath is read again after backoff_delay(RESTART_ATTEMPT + n): a few
# seconds with the IDCS settings, so that a burst of edits (a bulk import) can settle first.
RESTART_ATTEMPT = 4
TOKEN_MARGIN_SECONDS = 60
TOKEN_PATH = "/oauth2/v1/token"
ECID_HEADER = "X-ORACLE-DMS-ECID"
# IDCS limits admin calls per second *and per minute* (150/min on a free domain), so a 429 may
# need most of a minute: more retries and a longer cap than the Bitbucket defaults.
IDCS_SETTINGS = HttpSettings(retries=8, backoff_factor=0.5, backoff_max=30.0, retries_500=2,
                             retry_max_wait=300.0)


class PartialExtractError(RuntimeError):
    """A listing ended before ``totalResults`` items were seen, or a page could not be trusted:
    never sync from partial data."""


class ListingChangedError(PartialExtractError):
    """``totalResults`` (or a group's member count) changed between pages: the tenant changed
    while we paged. Transient: reading again later gives a consistent listing, so the Airflow
    read policy retries it (its rule comes before the FAIL rule for the PartialExtractError it
    subclasses, which keeps every ``except PartialExtractError`` treating it as unusable data)."""


class IdcsApiError(ApiError):
    """IDCS answered with an error (or not at all) and retrying did not help or cannot help."""

    def __init__(self, status: int | None, message: str, method: str, path: str,
                 ecid: str = "") -> None:
        super().__init__("IDCS", status, message, method, path, ecid)
        self.ecid = ecid


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
    """One identity domain. Thread-safe; ``metrics`` counts what every request cost."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, scope: str = SCOPE,
                 settings: HttpSettings | None = None, session: requests.Session | None = None,
                 verify: bool | str = True, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, limits: BodyLimits | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.limits = limits or BodyLimits()  # the same size cap and body deadline as Bitbucket's
        self.client_id, self._secret, self.scope = client_id, client_secret, scope
        self.settings = settings or IDCS_SETTINGS
        self.session = session or make_plain_session(self.settings, verify)
        self.sleep, self.rng = sleep, rng or random.Random()
        self.metrics = ExtractMetrics()
        self._token: str | None = None
        self._token_expiry = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the secret or the token
        return f"IdcsClient({self.base_url!r}, client_id={self.client_id!r})"

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (token requests and retries included)."""
        return int(self.metrics.total("requests"))

    def reset_metrics(self) -> None:
        self.metrics = ExtractMetrics()

    # -- token -------------------------------------------------------------------------------
    def token(self, *, replacing: str | None = None) -> str:
        """The cached access token, or a new one when it is about to expire or when the caller
        saw ``replacing`` refused (another thread may already have replaced it)."""
        with self._lock:
            stale = replacing is not None and replacing == self._token
            if stale or self._token is None or time.monotonic() >= self._token_expiry:
                resp = self._send("POST", TOKEN_PATH, data={
                    "grant_type": "client_credentials", "scope": self.scope}, bearer=False)
                body = parse_json_page(resp, TOKEN_PATH)
                token = body.get("access_token")
                if not isinstance(token, str) or not token:
                    raise IdcsApiError(resp.status_code, "token answer has no access_token",
                                       "POST", TOKEN_PATH, resp.headers.get(ECID_HEADER, ""))
                ttl = float(body.get("expires_in", 3600))
                self._token = token
                self._token_expiry = time.monotonic() + max(ttl - TOKEN_MARGIN_SECONDS, ttl / 2)
                log.info("IDCS access token issued (expires in %.0fs)", ttl)
            return self._token

    # -- one request, with retries -------------------------------------------------------------
    def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              data: dict[str, str] | None = None, bearer: bool = True) -> requests.Response:
        """Send until a success answer, retrying what may pass; raise IdcsApiError otherwise."""
        s, url, endpoint = self.settings, f"{self.base_url}{path}", endpoint_key(method, path)
        retries = server_errors = 0
        waited, refreshed, began = 0.0, False, time.monotonic()
        last_ecid = ""
        while True:
            headers = {"Accept": "application/scim+json, application/json"}
            used = None
            if bearer:
                used = self.token()
                headers["Authorization"] = f"Bearer {used}"
            resp, failure = self._once(method, url, endpoint, params, data, headers, bearer)
            status = resp.status_code if resp is not None else None
            if resp is not None:
                last_ecid = resp.headers.get(ECID_HEADER, "") or last_ecid
            if status is not None and status < 400:
                return resp
            if status == 401 and bearer and not refreshed:
                refreshed = True
                log.info("IDCS refused the access token on %s %s (expired or revoked); "
                         "requesting a new one", method, path)
                self.token(replacing=used)
                continue
            transient = status is None or status in RETRY_STATUSES or status == SERVER_ERROR
            reason = _failure_text(resp, failure, bearer, (self._secret, self._token))
            if not transient:
                raise IdcsApiError(status, f"{reason}{_ecid_text(last_ecid)}", method, path,
                                   last_ecid)
            delay, asked = self._delay(resp, retries + 1)
            spent = retries >= s.retries or (status == SERVER_ERROR
                                             and server_errors >= s.retries_500)
            if spent or waited + delay > s.retry_max_wait:
                why = ("retries exhausted" if spent else f"the server asked to wait "
                       f"{asked:.0f}s more" if asked is not None else "the wait would exceed it")
                raise IdcsApiError(status, (
                    f"gave up after {retries + 1} attempts in {time.monotonic() - began:.1f}s "
                    f"({why}; retry budget {s.retries} retries / {s.retry_max_wait:.0f}s): "
                    f"{reason}{_ecid_text(last_ecid)}"), method, path, last_ecid)
            retries += 1
            server_errors += status == SERVER_ERROR
            self.metrics.retry(endpoint, delay)
            log.warning("IDCS %s %s: %s; retry %d of %d in %.1fs", method, path,
                        status or type(failure).__name__, retries, s.retries, delay)
            self.sleep(delay)
            waited += delay

    def _once(self, method: str, url: str, endpoint: str, params: dict[str, Any] | None,
              data: dict[str, str] | None, headers: dict[str, str], bearer: bool
              ) -> tuple[requests.Response | None, Exception | None]:
        started = time.monotonic()
        try:
            resp = self.session.request(method, url, params=params, data=data, headers=headers,
                                        auth=None if bearer else (self.client_id, self._secret),
                                        timeout=self.settings.timeouts, stream=True)
            read_body(resp, self.limits)  # capped and deadlined; a reset mid-body fails here
            size = len(resp.content)
        except HostileResponse as exc:  # too large: final; still arriving at the deadline: retried
            self.metrics.request(endpoint, status=None, size=0,
                                 seconds=time.monotonic() - started)
            log.warning("IDCS %s %s: %s", method, url, exc)
            if not exc.retryable:
                path = url.removeprefix(self.base_url)
                raise IdcsApiError(None, str(exc), method, path) from None
            return None, exc
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            self.metrics.request(endpoint, status=None, size=0,
                                 seconds=time.monotonic() - started)
            return None, exc
        except requests.RequestException as exc:  # a bad URL, a TLS setup error: not transient
            raise IdcsApiError(None, _one_line(exc, (self._secret, self._token)), method,
                               url) from None
        self.metrics.request(endpoint, status=resp.status_code, size=size,
                             seconds=time.monotonic() - started)
        return resp, None

    def _delay(self, resp: requests.Response | None, attempt: int) -> tuple[float, float | None]:
        """Seconds to wait before ``attempt`` and what ``Retry-After`` asked for (if it did):
        at least ``Retry-After`` plus a little jitter, else exponential backoff with jitter."""
        asked = parse_retry_after(resp.headers.get("Retry-After")) if resp is not None else None
        if asked is not None:
            return asked + self.rng.uniform(0, min(1.0, 0.1 * asked + 0.05)), asked
        return backoff_delay(attempt, self.settings, self.rng), None

    # -- reads -----------------------------------------------------------------------------------
    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return parse_json_page(self._send("GET", path, params=params), path)

    def count(self, path: str, scim_filter: str | None = None) -> int:
        """``totalResults`` alone (``count=0``): one cheap request."""
        params: dict[str, Any] = {"count": 0}
        if scim_filter:
            params["filter"] = scim_filter
        body = self.get(path, params)
        total = body.get("totalResults")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise PartialExtractError(f"IDCS {path} count has no usable totalResults "
                                      f"({total!r}); refusing to sync from it")
        return total

    def iter_resources(self, path: str, params: dict[str, Any] | None = None,
                       page_size: int = MAX_PAGE) -> Iterator[dict[str, Any]]:
        """Every resource of a listing, page by page; raises if the listing comes up short,
        overflows, changes its total or repeats itself (see :func:`check_page`)."""
        start, seen, total = 1, 0, None
        ids: set[str] = set()
        where = f"IDCS {path} (filter {(params or {}).get('filter', 'none')!r})"
        endpoint = endpoint_key("GET", path)
        while True:
            body = self.get(path, {**(params or {}), "startIndex": start, "count": page_size})
            total, resources = check_page(body, where, start, total, ids)
            self.metrics.page(endpoint)
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

    def list_all(self, path: str, params: dict[str, Any] | None = None,
                 page_size: int = MAX_PAGE, restarts: int = 1) -> list[dict[str, Any]]:
        """The whole listing as a list. A total that changes mid-listing restarts it after a
        backoff (up to ``restarts`` times), since a tenant edited while we page gives no
        consistent view; then :class:`ListingChangedError` (transient) is raised."""
        return self._consistent(lambda: self.iter_resources(path, params, page_size), restarts)

    def list_group_members(self, group_id: str, page_size: int = MEMBER_PAGE,
                           restarts: int = 1) -> list[dict[str, Any]]:
        """All of a group's members (:meth:`iter_group_members`), read again from the start
        after a backoff when the membership changed while it was paged."""
        return self._consistent(lambda: self.iter_group_members(group_id, page_size), restarts)

    def _consistent(self, read: Callable[[], Iterator[dict[str, Any]]],
                    restarts: int) -> list[dict[str, Any]]:
        for attempt in range(restarts + 1):
            try:
                return list(read())
            except ListingChangedError as exc:
                if attempt == restarts:
                    raise
                delay = backoff_delay(RESTART_ATTEMPT + attempt, self.settings, self.rng)
                log.warning("%s; reading it again from the start in %.1fs", exc, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def group_member_count(self, group_id: str) -> int:
        """How many users IDCS says are in the group: the group resource carries no member
        count, so this is the ``totalResults`` of the users whose ``groups`` hold it."""
        return self.count(USERS_PATH, f"groups.value eq {_scim_string(group_id)}")

    def iter_group_members(self, group_id: str, page_size: int = MEMBER_PAGE
                           ) -> Iterator[dict[str, Any]]:
        """A group's members, paged with ``members[startIndex=S&count=C]`` so that groups over
        10,000 members (which IDCS refuses to return in one answer) read correctly.

        IDCS may return fewer members than asked, so a short page is not the end: reading goes
        on until the member count IDCS reports (:meth:`group_member_count`, one extra request)
        is reached. Ending below it (an empty page first) or above it is a
        :class:`PartialExtractError`, or a :class:`ListingChangedError` when the count itself
        changed meanwhile (members added or removed while we paged shift the pages). Members
        appended after the count was taken are left for the next run: the listing is the group
        as it was when the count was taken."""
        expected = self.group_member_count(group_id)
        start, read = 1, 0
        path = f"/admin/v1/Groups/{url_quote(group_id, safe='')}"  # an id is data, not a path
        seen: set[str] = set()
        while True:
            body = self.get(path, {"attributes": f"members[startIndex={start}&count={page_size}]"})
            members = body.get("members") or []
            if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
                raise PartialExtractError(f"IDCS group {group_id} members at startIndex {start} "
                                          "are not a list of objects; refusing to sync from it")
            values = [m.get("value") for m in members]
            if seen.intersection(v for v in values if isinstance(v, str)):
                self._members_inconsistent(group_id, expected, read, (
                    f"IDCS group {group_id} member page at startIndex {start} repeats earlier "
                    "members; paging is broken, refusing to sync from it"))
            seen.update(v for v in values if isinstance(v, str))
            self.metrics.page(endpoint_key("GET", path))
            yield from members
            read += len(members)
            start += len(members)
            # done: the reported count reached and the page not full (a full one may hide more)
            if read == expected and len(members) < page_size:
                return
            if read > expected:
                self._members_inconsistent(group_id, expected, read, (
                    f"IDCS group {group_id} member listing returned {read} members, more than "
                    f"the {expected} IDCS reports for it; refusing to sync from a listing that "
                    "contradicts itself"))
            if not members:
                self._members_inconsistent(group_id, expected, read, (
                    f"IDCS group {group_id} member listing stopped at {read} of {expected} "
                    f"members (empty page at startIndex {start}); refusing to sync partial data"))

    def _members_inconsistent(self, group_id: str, expected: int, read: int,
                              problem: str) -> NoReturn:
        """Raise for a member listing that does not add up: :class:`ListingChangedError` when
        the member count has changed since the listing began (asked again to tell: members
        added or removed while we paged shift the pages), else ``problem`` as a
        :class:`PartialExtractError`."""
        now = self.group_member_count(group_id)
        if now != expected:
            raise ListingChangedError(
                f"IDCS group {group_id} member count changed from {expected} to {now} while its "
                f"members were paged ({read} read): the membership changed underneath; run again")
        raise PartialExtractError(problem)


def _scim_string(value: str) -> str:
    """A SCIM filter string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_page(body: dict[str, Any], where: str, start: int, total: int | None,
               ids: set[str]) -> tuple[int, list[dict[str, Any]]]:
    """Validate one listing page against the first: same ``totalResults``, a list of objects,
    no id seen on an earlier page. Returns the total and the resources."""
    raw_total, resources = body.get("totalResults"), body.get("Resources") or []
    if isinstance(raw_total, bool) or not isinstance(raw_total, int) or raw_total < 0:
        raise PartialExtractError(f"{where} page at startIndex {start} has no usable "
                                  f"totalResults ({raw_total!r}); refusing to sync from it")
    if total is not None and raw_total != total:
        raise ListingChangedError(
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


def _one_line(exc: BaseException, secrets: tuple[str | None, ...] = ()) -> str:
    """The exception on one line, secrets redacted (before cutting: no half secret survives)."""
    full = redact(str(exc), secrets)
    text = full.splitlines()[0] if full else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _ecid_text(ecid: str) -> str:
    return f" [{ECID_HEADER}: {ecid or 'none received'}]"


def _failure_text(resp: requests.Response | None, failure: Exception | None,
                  bearer: bool, secrets: tuple[str | None, ...] = ()) -> str:
    """What went wrong, on one line, without credentials (``secrets`` never echoed)."""
    if resp is None:
        return f"no answer ({_one_line(failure, secrets) if failure else 'unknown failure'})"
    detail = redact(_scim_error(resp) if bearer else _oauth_error(resp), secrets)
    return f"HTTP {resp.status_code}: {' '.join(detail.split())}"


def _scim_error(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return _snippet(resp.text) or resp.reason or ""
    if not isinstance(body, dict):
        return _snippet(resp.text)
    return str(body.get("detail") or body.get("error_description") or body)[:300]


def _oauth_error(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return _snippet(resp.text) or resp.reason or ""
    if not isinstance(body, dict):
        return _snippet(resp.text)
    if "error" not in body:  # a SCIM error (a 429 or 503 of the gateway), not an OAuth one
        return _scim_error(resp)
    return f"{body['error']}: {body.get('error_description', '')}".strip()
