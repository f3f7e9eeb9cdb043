"""HTTP plumbing shared by the API clients: sessions, retry classification, rate limiting.

Two ways to make a session. :func:`make_session` lets urllib3 retry connection errors, read
timeouts, 429 (honouring ``Retry-After``), 502, 503 and 504 for every method, with jitter.
:func:`make_plain_session` retries nothing: the Bitbucket client (:mod:`identity_sync.bitbucket.
transport`) and the IDCS client (:mod:`identity_sync.idcs.client`) run their own loops, because
they must count retries, bound the total wait, read a timed-out create back before sending it
again, or share one client-side token bucket between threads.

Both take ``verify`` (True, False or a CA bundle path) and a default ``(connect, read)`` timeout
that applies to every request sent without an explicit one: a session can never hang forever.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response
from urllib3.util.retry import Retry

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Retried with backoff, many times: the server said "not now" or a proxy lost the request.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Retried a few times only: a 500 is usually a bug that repeats, occasionally a hiccup.
SERVER_ERROR = 500
DEFAULT_RETRY_AFTER = 5.0  # what Atlassian's own Jenkins plugin assumes when the header is absent


Timeout = float | tuple[float, float]


@dataclass(frozen=True)
class HttpSettings:
    timeout: float = 30.0  # read timeout (seconds between bytes of the answer)
    connect_timeout: float = 10.0  # TCP/TLS connect timeout (never more than ``timeout``)
    retries: int = 5  # retries of 429/502/503/504, timeouts and resets (0 = none)
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    pool_size: int = 8
    retries_500: int = 2  # a 500 is retried at most this many times (and never beyond retries)
    retry_max_wait: float = 600.0  # total seconds one request may spend waiting between tries
    default_retry_after: float = DEFAULT_RETRY_AFTER
    # Client-side token bucket, per client (shared by its threads). None = decide at preflight:
    # Bitbucket's documented default (capacity 60, 5/s) scaled by rate_limit_margin until the
    # server's own settings are read; off when the account is allow-listed or limiting is off.
    rate_limit_capacity: float | None = None
    rate_limit_fill_rate: float | None = None
    rate_limit_margin: float = 0.95
    # Clients that share the account's server-side bucket at once (the parallel apply tasks, the
    # ``bitbucket_api`` pool's slots): each paces to 1/share of the bucket's burst and refill, so
    # together they stay inside it instead of overrunning it share-fold.
    rate_limit_share: int = 1
    # Requests in flight per client, whatever the number of threads; an apply batch sends this
    # many operations at once (8: what a latency-bound run needs to keep the API busy).
    max_concurrency: int = 8

    @property
    def timeouts(self) -> tuple[float, float]:
        """``(connect, read)`` as requests takes it."""
        return (min(self.connect_timeout, self.timeout), self.timeout)


# Query parameters whose values are secrets (Bitbucket's create-user ``password`` above all:
# its API takes the initial password in the URL, and requests' ConnectionError repeats the URL).
SECRET_PARAMS = ("password", "passwd", "pwd", "secret", "client_secret", "token", "access_token",
                 "refresh_token", "id_token", "api_key", "apikey", "assertion")
_SECRET_PARAM = re.compile(r"(?i)(?<![\w%.-])(" + "|".join(SECRET_PARAMS) + r")=[^&\s'\"#]*")
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@:'\"]+:[^/\s@'\"]*@")
REDACTED = "***"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` fit to leave the client: each of ``secrets`` (as text, URL-encoded or inside
    JSON) replaced by ``***``, secret query parameters shown as ``password=***`` and the
    ``user:password@`` of a URL as ``***@``. Apply to every exception text before it becomes an
    error message, a log line or an audit row."""
    for secret in secrets:
        if not secret or len(secret) < 3:  # too short to tell from ordinary text
            continue
        forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
                 json.dumps(secret)[1:-1], secret.replace("-", "%2D")}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, REDACTED)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _URL_USERINFO.sub(f"{REDACTED}@", text)


class ApiError(RuntimeError):
    """An API answered with an error. ``transient`` says whether trying again later may help.
    Message, URL and detail are passed through :func:`redact`: no secret query parameter
    reaches an error text, whoever built it."""

    def __init__(self, service: str, status: int | None, message: str, method: str = "",
                 url: str = "", detail: str = "") -> None:
        message, url, detail = redact(message), redact(url), redact(detail)
        self.service, self.status, self.message = service, status, message
        self.method, self.url, self.detail = method, url, detail
        where = f" on {method} {url}" if method else ""
        super().__init__(f"{service} {status or 'error'}{where}: {message}")

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in TRANSIENT_STATUSES


class TimeoutAdapter(HTTPAdapter):
    """An adapter with a default timeout for requests sent without one (requests' own default
    is to wait forever), and the session's own ``verify`` when it is not the default: requests
    lets ``REQUESTS_CA_BUNDLE`` override ``session.verify``, so a configured CA bundle or
    ``verify=False`` would otherwise be ignored wherever that variable is set."""

    def __init__(self, *args: object, timeout: Timeout, verify: bool | str = True,
                 **kwargs: object) -> None:
        self.default_timeout, self.verify = timeout, verify
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def send(self, request: PreparedRequest, stream: bool = False,  # type: ignore[override]
             timeout: Timeout | None = None, verify: bool | str = True,
             cert: object = None, proxies: object = None) -> Response:
        return super().send(request, stream=stream,
                            timeout=self.default_timeout if timeout is None else timeout,
                            verify=verify if self.verify is True else self.verify,
                            cert=cert, proxies=proxies)  # type: ignore[arg-type]


def make_session(settings: HttpSettings | None = None, verify: bool | str = True,
                 timeout: Timeout | None = None) -> requests.Session:
    """A session whose adapter retries transient failures itself (exponential backoff with
    jitter, ``Retry-After`` honoured). ``timeout`` defaults to ``settings.timeouts``."""
    settings = settings or HttpSettings()
    retry = Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        status_forcelist=sorted(RETRY_STATUSES),
        allowed_methods=None,  # retry every method: operations are idempotent
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max,
        backoff_jitter=settings.backoff_factor,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    return _session(TimeoutAdapter(max_retries=retry, pool_connections=settings.pool_size,
                                   pool_maxsize=settings.pool_size, verify=verify,
                                   timeout=timeout or settings.timeouts), verify)


def make_plain_session(settings: HttpSettings | None = None,
                       verify: bool | str = True,
                       timeout: Timeout | None = None) -> requests.Session:
    """A session that never retries by itself; the caller classifies and retries.
    ``timeout`` (seconds, or ``(connect, read)``) defaults to ``settings.timeouts``."""
    settings = settings or HttpSettings()
    size = max(settings.pool_size, settings.max_concurrency)
    return _session(TimeoutAdapter(max_retries=Retry(total=0, connect=0, read=0, status=0,
                                                     redirect=0, raise_on_status=False),
                                   pool_connections=size, pool_maxsize=size, verify=verify,
                                   timeout=timeout or settings.timeouts), verify)


def _session(adapter: HTTPAdapter, verify: bool | str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.verify = verify
    return session


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, settings: HttpSettings, rng: random.Random) -> float:
    """Exponential backoff with jitter for retry ``attempt`` (1-based): half fixed, half random,
    so threads that failed together do not come back together."""
    base = min(settings.backoff_max, settings.backoff_factor * 2 ** (attempt - 1))
    return base / 2 + rng.uniform(0, base / 2)


class TokenBucket:
    """A thread-safe token bucket: ``capacity`` tokens, refilled at ``fill_rate`` per second.

    Used on both sides: the Bitbucket emulator answers 429 when :meth:`try_take` fails; the
    client calls :meth:`acquire`, which waits for a token, so the server's limiter is rarely hit.
    """

    def __init__(self, capacity: float, fill_rate: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or fill_rate <= 0:
            raise ValueError("a token bucket needs capacity >= 1 and fill_rate > 0")
        self.capacity, self.fill_rate, self.clock = float(capacity), float(fill_rate), clock
        self.tokens = float(capacity)
        self.updated = clock()
        self.blocked_until = 0.0
        self.lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self.updated:  # ``updated`` may lie ahead after a pause
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.fill_rate)
            self.updated = now

    def try_take(self) -> float:
        """Take a token and return 0, or take nothing and return the seconds until one exists."""
        with self.lock:
            now = self.clock()
            self._refill(now)
            if now < self.blocked_until:
                return self.blocked_until - now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.fill_rate

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait for a token; returns the seconds waited."""
        waited = 0.0
        while (wait := self.try_take()) > 0:
            sleep(wait)
            waited += wait
        return waited

    def pause(self, seconds: float) -> None:
        """Hand out nothing for ``seconds`` and start again from empty (after a 429: every
        thread sharing the bucket backs off, not just the one that was refused)."""
        with self.lock:
            now = self.clock()
            self.blocked_until = max(self.blocked_until, now + seconds)
            self.tokens = 0.0
            self.updated = max(self.updated, self.blocked_until)
