"""IDCS's API rate limits (per second and per minute, per API group) and overload answers.

Why: a sync that bursts past the domain's limits gets 429s (reference §7), and an overloaded or
maintained service answers 503; the client's throttling and backoff can only be shown to work
against a server that enforces both. Limits count requests per API group in fixed one-second
and one-minute windows, as the tier table documents them; ``max_concurrent`` answers 503 to
requests beyond that many in flight. Both are off until ``PUT /_emulator/rate-limits``::

    {"enabled": true, "tier": "free", "retry_after": false, "max_concurrent": 8,
     "groups": {"others": {"per_second": 5, "per_minute": 100}}}

``tier`` is one of :data:`TIERS` (``free``, ``oracle_apps``, ``oracle_apps_premium``,
``premium``, ``external_user``); ``groups`` overrides single limits. IDCS does not document a
``Retry-After`` header, so none is sent unless ``retry_after`` is true (then: seconds until the
window that refused the request ends, rounded up).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import CONTROL_PREFIX

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"

# group -> tier -> (per second, per minute), from the table in reference §7 (D-RL).
TIERS: dict[str, dict[str, tuple[int, int]]] = {
    "free": {"authn": (10, 150), "token": (10, 150), "others": (20, 150), "bulk": (5, 200)},
    "oracle_apps": {"authn": (50, 1000), "token": (40, 1000), "others": (50, 1500),
                    "bulk": (5, 200)},
    "oracle_apps_premium": {"authn": (80, 2100), "token": (50, 1700), "others": (55, 1750),
                            "bulk": (5, 200)},
    "premium": {"authn": (95, 4500), "token": (65, 3400), "others": (90, 5000),
                "bulk": (5, 200)},
    "external_user": {"authn": (90, 3100), "token": (60, 2300), "others": (80, 4000),
                      "bulk": (5, 200)},
}


def api_group(path: str) -> str | None:
    """The rate-limit group of a request path (None: not limited, e.g. the test controls)."""
    if path.startswith(CONTROL_PREFIX):
        return None
    if path.startswith("/oauth2/v1/"):
        return "token"
    if path.startswith("/sso/") or path.startswith("/mfa/"):
        return "authn"
    if path.rstrip("/") == "/admin/v1/Bulk":
        return "bulk"
    return "others"


@dataclass
class LimitSettings:
    enabled: bool = False
    tier: str = "premium"
    retry_after: bool = False
    max_concurrent: int | None = None
    groups: dict[str, dict[str, int]] = field(default_factory=dict)

    def limits(self, group: str) -> tuple[int, int]:
        per_second, per_minute = TIERS[self.tier][group]
        override = self.groups.get(group, {})
        return (int(override.get("per_second", per_second)),
                int(override.get("per_minute", per_minute)))

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "tier": self.tier, "retry_after": self.retry_after,
                "max_concurrent": self.max_concurrent, "groups": self.groups,
                "effective": {g: dict(zip(("per_second", "per_minute"), self.limits(g),
                                          strict=True)) for g in TIERS[self.tier]}}


def _settings_from(data: dict[str, Any]) -> LimitSettings:
    known = set(LimitSettings.__dataclass_fields__)
    if set(data) - known:
        raise ValueError(f"unknown rate-limit settings: {sorted(set(data) - known)}")
    tier = data.get("tier", "premium")
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {sorted(TIERS)}")
    groups = data.get("groups") or {}
    for name, values in groups.items():
        if name not in TIERS[tier] or not isinstance(values, dict) or set(values) - {
                "per_second", "per_minute"} or not all(
                isinstance(v, int) and v >= 1 for v in values.values()):
            raise ValueError(f"groups.{name} must be {{per_second, per_minute}} (whole "
                             f"numbers >= 1) for a group in {sorted(TIERS[tier])}")
    concurrent = data.get("max_concurrent")
    if concurrent is not None and (not isinstance(concurrent, int) or concurrent < 1):
        raise ValueError("max_concurrent must be a whole number >= 1 or null")
    return LimitSettings(bool(data.get("enabled", False)), tier,
                         bool(data.get("retry_after", False)), concurrent, groups)


class Limiter:
    """Fixed-window counters per API group; thread-safe; the clock is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.settings = LimitSettings()
            self.windows: dict[tuple[str, str, int], int] = {}
            self.in_flight = 0
            self.rejected: Counter[str] = Counter()

    def configure(self, data: dict[str, Any]) -> None:
        settings = _settings_from(data)
        with self.lock:
            self.settings = settings
            self.windows.clear()

    def admit(self, group: str) -> float | None:
        """Count a request; None if admitted, else seconds until its window ends."""
        with self.lock:
            if not self.settings.enabled:
                return None
            now = self.clock()
            per_second, per_minute = self.settings.limits(group)
            second, minute = int(now), int(now // 60)
            self.windows = {k: v for k, v in self.windows.items()
                            if (k[1] == "s" and k[2] >= second) or (k[1] == "m" and k[2] >= minute)}
            used_s = self.windows.get((group, "s", second), 0)
            used_m = self.windows.get((group, "m", minute), 0)
            if used_m >= per_minute:
                self.rejected[f"{group}:minute"] += 1
                return (minute + 1) * 60 - now
            if used_s >= per_second:
                self.rejected[f"{group}:second"] += 1
                return second + 1 - now
            self.windows[(group, "s", second)] = used_s + 1
            self.windows[(group, "m", minute)] = used_m + 1
            return None

    def enter(self) -> bool:
        with self.lock:
            limit = self.settings.max_concurrent
            if limit is not None and self.in_flight >= limit:
                self.rejected["overload"] += 1
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {**self.settings.to_dict(), "rejected": dict(self.rejected),
                    "in_flight": self.in_flight}


def _error(status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> tuple[
        dict[str, Any], bytes]:
    body = json.dumps({"schemas": [ERROR_SCHEMA], "detail": detail,
                       "status": str(status)}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/scim+json;charset=UTF-8"),
                         (b"content-length", str(len(body)).encode()), *headers]}
    return start, body


class LimitsMiddleware:
    """ASGI layer in front of the API: 503 beyond ``max_concurrent``, 429 beyond the limits."""

    def __init__(self, app: Any, limiter: Limiter) -> None:
        self.app, self.limiter = app, limiter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        group = api_group(scope["path"]) if scope["type"] == "http" else None
        if group is None:
            await self.app(scope, receive, send)
            return
        if not self.limiter.enter():
            start, body = _error(503, "Service Unavailable: the server is overloaded, retry "
                                      "later.", [])
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        try:
            wait = self.limiter.admit(group)
            if wait is not None:
                headers = ([(b"retry-after", str(max(1, math.ceil(wait))).encode())]
                           if self.limiter.settings.retry_after else [])
                start, body = _error(429, "Too many requests: the API rate limit of this "
                                          "identity domain was reached.", headers)
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive, send)
        finally:
            self.limiter.leave()


def limit_routes(limiter: Limiter) -> list[BaseRoute]:
    """``GET/PUT /_emulator/rate-limits``."""

    async def get_limits(_: Request) -> Response:
        return JSONResponse(limiter.stats())

    async def put_limits(request: Request) -> Response:
        try:
            limiter.configure(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(limiter.stats())

    p = CONTROL_PREFIX
    return [Route(f"{p}/rate-limits", get_limits, methods=["GET"]),
            Route(f"{p}/rate-limits", put_limits, methods=["PUT"])]
