"""What an extract cost: requests, pages, bytes, retries and seconds, per endpoint.

Why: the extract must use the fewest requests the API allows (design invariant 7) and stay under
IDCS's per-second and per-minute limits, so every run records what it spent; the numbers are
logged, stored in the audit database and compared between runs.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

_ID_SEGMENT = re.compile(r"^(/admin/v1/[A-Za-z]+)/(?!\.search$)[^/]+$")


def endpoint_key(method: str, path: str) -> str:
    """``GET /admin/v1/Groups/{id}`` for every group id: one row per endpoint, not per group."""
    match = _ID_SEGMENT.match(path)
    return f"{method} {match.group(1)}/{{id}}" if match else f"{method} {path}"


@dataclass
class EndpointStats:
    requests: int = 0  # HTTP requests sent, retries included
    pages: int = 0  # listing pages (or member pages) accepted
    bytes: int = 0  # response body bytes received
    retries: int = 0
    throttled: int = 0  # 429 answers
    errors: int = 0  # answers >= 400 and network failures
    seconds: float = 0.0  # time spent in requests, not in backoff sleeps


@dataclass
class ExtractMetrics:
    """Thread-safe counters for one client; :meth:`snapshot` is what is logged and stored."""

    endpoints: dict[str, EndpointStats] = field(default_factory=dict)
    waited: float = 0.0  # seconds slept between retries
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _stats(self, endpoint: str) -> EndpointStats:
        return self.endpoints.setdefault(endpoint, EndpointStats())

    def request(self, endpoint: str, *, status: int | None, size: int, seconds: float) -> None:
        with self._lock:
            stats = self._stats(endpoint)
            stats.requests += 1
            stats.bytes += size
            stats.seconds += seconds
            stats.throttled += status == 429
            stats.errors += status is None or status >= 400

    def retry(self, endpoint: str, delay: float) -> None:
        with self._lock:
            self._stats(endpoint).retries += 1
            self.waited += delay

    def page(self, endpoint: str) -> None:
        with self._lock:
            self._stats(endpoint).pages += 1

    def total(self, name: str) -> int | float:
        with self._lock:
            return sum(getattr(s, name) for s in self.endpoints.values())

    def snapshot(self) -> dict[str, Any]:
        """Totals plus per-endpoint rows, JSON-ready."""
        with self._lock:
            rows = {k: asdict(v) for k, v in sorted(self.endpoints.items())}
        totals = {name: sum(r[name] for r in rows.values())
                  for name in ("requests", "pages", "bytes", "retries", "throttled", "errors")}
        return {**totals, "waited_seconds": round(self.waited, 3),
                "seconds": round(time.monotonic() - self.started, 3), "endpoints": rows}

    def describe(self) -> str:
        """One log line: totals, then requests per endpoint."""
        snap = self.snapshot()
        per = ", ".join(f"{k} {v['requests']}" for k, v in snap["endpoints"].items())
        return (f"{snap['requests']} requests ({snap['pages']} pages, "
                f"{snap['bytes'] / 1024:.0f} KiB, {snap['retries']} retries, "
                f"{snap['throttled']} throttled) in {snap['seconds']:.1f}s: {per}")
