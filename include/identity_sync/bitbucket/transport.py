"""How the Bitbucket client sends one request: pacing, bounded concurrency, classified retries.

Why not urllib3's ``Retry``: it would resend a POST that timed out without asking whether it
landed, retry a 500 as often as a 503, and back off per connection instead of per account. Here:

- 429, 502, 503, 504, timeouts and connection resets are retried up to ``retries`` times with
  exponential backoff and jitter; ``Retry-After`` is honoured (5 s when a 429 lacks it) and a
  429 pauses the shared token bucket, so every thread of the client backs off together;
- 500 is retried ``retries_500`` times at most (a bug repeats, a hiccup does not);
- any other 4xx is final; the caller turns it into a readable :class:`BitbucketError`;
- before resending a request that may have been carried out (timeout, reset, 500/502/504), the
  ``read_back`` callback asks Bitbucket whether it was; if so, the request is not sent again.

Every request has a connect and a read timeout, and its body is read under two more bounds
(:class:`BodyLimits`): a size cap, so a runaway answer cannot exhaust memory, and a deadline for
the whole body, since a server dripping one byte at a time never trips a read timeout.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import requests
from urllib3.exceptions import NewConnectionError

from ..http import (
    RETRY_STATUSES,
    SERVER_ERROR,
    ApiError,
    HttpSettings,
    TokenBucket,
    backoff_delay,
    parse_retry_after,
)

log = logging.getLogger(__name__)

# Outcomes after which the server may have done the work even though we got no success answer.
AMBIGUOUS_STATUSES = frozenset({500, 502, 504})
# Bitbucket's documented defaults (reference §11): a 60-token bucket refilled at 5 per second.
BITBUCKET_CAPACITY, BITBUCKET_FILL_RATE = 60.0, 5.0


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int = 32 * 1024 * 1024  # no admin answer comes near this (1000 users ~ 0.5 MB)
    deadline: float = 120.0  # seconds for the whole body, however steadily it trickles in


class HostileResponse(requests.RequestException):
    """An answer refused while reading it: too large (final) or too slow (retried)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Sent:
    """The final answer (None when ``read_back`` found the work done) or the network failure."""

    response: requests.Response | None
    failure: requests.RequestException | None = None
    read_back: bool = False


class Transport:
    """One per client; thread-safe. ``stats`` counts attempts, retries, 429s and read-backs."""

    def __init__(self, session: requests.Session, settings: HttpSettings, *,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, limits: BodyLimits | None = None) -> None:
        self.session, self.settings, self.sleep = session, settings, sleep
        self.limits = limits or BodyLimits()
        self.rng = rng or random.Random()
        self.gate = threading.BoundedSemaphore(max(1, settings.max_concurrency))
        self.stats: Counter[str] = Counter()
        self.stats_lock = threading.Lock()
        self.limiter: TokenBucket | None = None
        self.rate: tuple[float, float] | None = None  # the whole bucket, before the share
        if settings.rate_limit_fill_rate != 0:  # 0 = explicitly off
            self.set_rate(settings.rate_limit_capacity or BITBUCKET_CAPACITY * settings.rate_limit_margin,
                          settings.rate_limit_fill_rate or BITBUCKET_FILL_RATE * settings.rate_limit_margin)

    def set_rate(self, capacity: float | None, fill_rate: float | None) -> None:
        """Pace at this client's share (``settings.rate_limit_share``) of a bucket of
        ``capacity`` refilled at ``fill_rate`` requests/s; None switches pacing off."""
        self.rate = None if capacity is None or fill_rate is None else (capacity, fill_rate)
        if self.rate is None:
            self.limiter = None
            return
        share = max(1, self.settings.rate_limit_share)
        self.limiter = TokenBucket(max(1.0, capacity / share), fill_rate / share)

    def share_rate(self, share: int) -> None:
        """Pace to 1/``share`` of the bucket from now on (``share`` clients run at once)."""
        self.settings = dataclasses.replace(self.settings, rate_limit_share=max(1, share))
        if self.rate is not None:
            self.set_rate(*self.rate)

    def _count(self, key: str, n: float = 1) -> None:
        with self.stats_lock:
            self.stats[key] += n

    def send(self, method: str, url: str, *, params: object = None, json: object = None,
             read_back: Callable[[], bool] | None = None) -> Sent:
        s = self.settings
        retries = server_errors = 0
        waited = 0.0
        while True:
            if self.limiter is not None:
                paced = self.limiter.acquire(self.sleep)
                if paced:
                    self._count("paced_seconds", paced)
            sent = self._once(method, url, params, json)
            status = sent.response.status_code if sent.response is not None else None
            if status is not None and status < 400:
                return sent
            if status == 429:
                self._count("throttled")
            retryable = (status is None and getattr(sent.failure, "retryable", True)) or (
                status in RETRY_STATUSES) or (
                status == SERVER_ERROR and server_errors < s.retries_500)
            delay = self._delay(sent, status, retries + 1)
            if not retryable or retries >= s.retries or waited + delay > s.retry_max_wait:
                return sent
            retries += 1
            server_errors += status == SERVER_ERROR
            self._count("retries")
            log.warning("Bitbucket %s %s: %s; retry %d of %d in %.1fs", method, url,
                        status or type(sent.failure).__name__, retries, s.retries, delay)
            if status == 429 and self.limiter is not None:
                self.limiter.pause(delay)
            self.sleep(delay)
            waited += delay
            if read_back is not None and _ambiguous(sent, status):
                self._count("read_backs")
                if _read_back(read_back):
                    log.warning("Bitbucket %s %s: no answer, but reading back shows it was done; "
                                "not sending it again", method, url)
                    return Sent(None, None, read_back=True)

    def _once(self, method: str, url: str, params: object, json: object) -> Sent:
        self._count("attempts")
        with self.gate:
            try:
                resp = self.session.request(method, url, params=params, json=json,
                                            timeout=self.settings.timeouts, stream=True)
                self._read_body(resp)
                return Sent(resp)
            except HostileResponse as exc:
                self._count("hostile_answers")
                log.warning("Bitbucket %s %s: %s", method, url, exc)
                return Sent(None, exc)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._count("network_errors")
                return Sent(None, exc)

    def _read_body(self, resp: requests.Response) -> None:
        self.read_body(resp, self.limits)

    @staticmethod
    def read_body(resp: requests.Response, limits: BodyLimits) -> None:
        """Read the body of a ``stream=True`` answer into ``resp`` (as requests would), within
        ``limits``; raise :class:`HostileResponse` (the connection closed) when it breaks them, or
        ``requests.ConnectionError`` when the body is cut off. Shared by the IDCS client."""
        if resp._content_consumed:  # a session response hook has read it already: keep that
            return
        started = time.monotonic()
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            resp.close()
            raise HostileResponse(f"answer of {int(declared)} bytes refused (limit "
                                  f"{limits.max_bytes})", retryable=False)
        chunks, size = [], 0
        try:
            while True:
                chunk = resp.raw.read1(65536, decode_content=True)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limits.max_bytes:
                    raise HostileResponse(f"answer larger than {limits.max_bytes} bytes refused",
                                          retryable=False)
                if time.monotonic() - started > limits.deadline:
                    raise HostileResponse(f"answer still arriving after {limits.deadline:g}s "
                                          f"({size} bytes): given up", retryable=True)
        except HostileResponse:
            resp.close()
            raise
        except (OSError, ValueError) as exc:  # urllib3's read errors, as requests maps them
            resp.close()
            raise requests.ConnectionError(exc) from exc
        resp.raw.release_conn()  # read to the end: the connection can serve the next request
        # What requests' own ``Response.content`` does once it has read the body.
        resp._content = b"".join(chunks)
        resp._content_consumed = True

    def _delay(self, sent: Sent, status: int | None, attempt: int) -> float:
        header = sent.response.headers.get("Retry-After") if sent.response is not None else None
        retry_after = parse_retry_after(header)
        if status == 429:
            base = self.settings.default_retry_after if retry_after is None else retry_after
            return base + self.rng.uniform(0, min(1.0, 0.1 * base + 0.1))  # spread the herd
        if retry_after is not None:
            return retry_after
        return backoff_delay(attempt, self.settings, self.rng)


read_body = Transport.read_body  # the same bounded read, for the IDCS client


def _ambiguous(sent: Sent, status: int | None) -> bool:
    """Might the request have been carried out? Not when the connection was never made."""
    if status is not None:
        return status in AMBIGUOUS_STATUSES
    if isinstance(sent.failure, requests.ConnectTimeout):
        return False
    reason = getattr(sent.failure.args[0] if sent.failure and sent.failure.args else None,
                     "reason", None)
    return not isinstance(reason, NewConnectionError)


def _read_back(check: Callable[[], bool]) -> bool:
    """A read-back that fails itself proves nothing: resend (the 409/404 mapping keeps a
    duplicate harmless)."""
    try:
        return check()
    except ApiError as err:
        log.warning("read-back failed (%s); sending the request again", err)
        return False
