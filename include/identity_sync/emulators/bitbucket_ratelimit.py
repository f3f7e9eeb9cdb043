"""Bitbucket's per-user rate limiter: settings, allow-list, token buckets and reject history.

Why: a sync that ignores rate limiting is throttled or trips other integrations (reference §11);
the client can only be shown to stay under the limit against a server that enforces it. One
token bucket per user (capacity, fill rate per second), overridable or allow-listed per user;
over the limit the request gets 429 with ``Retry-After`` in whole seconds. Off by default, like
the demo needs; ``PUT /admin/rate-limit/settings`` or ``PUT /_emulator/rate-limit`` turns it on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..http import TokenBucket
from .bitbucket_state import EX_VALIDATION, BitbucketError, User, invalid

DEFAULT_CAPACITY = 60  # Atlassian's documented example and default
DEFAULT_FILL_RATE = 5
# UNCERTAIN (reference §11): no 429 body has been captured; the envelope and this name are a
# recognisable guess. Clients key on the status and Retry-After only.
EX_RATE_LIMITED = "com.atlassian.bitbucket.throttle.RateLimitExceededException"


@dataclass
class UserLimit:
    whitelisted: bool = False
    capacity: int | None = None
    fill_rate: int | None = None


@dataclass
class Rejects:
    count: int = 0
    last: int = 0  # epoch milliseconds


class RateLimiter:
    """Thread-safe; keyed by user id so a rename keeps the user's settings (as Bitbucket does)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.enabled = False
            self.capacity, self.fill_rate = DEFAULT_CAPACITY, DEFAULT_FILL_RATE
            self.users: dict[int, UserLimit] = {}
            self.buckets: dict[int, TokenBucket] = {}
            self.rejects: dict[int, Rejects] = {}

    # ---- settings -----------------------------------------------------------------------------

    def set_defaults(self, enabled: bool | None, capacity: int | None,
                     fill_rate: int | None) -> None:
        with self.lock:
            if enabled is not None:
                self.enabled = enabled
            if capacity is not None:
                self.capacity = capacity
            if fill_rate is not None:
                self.fill_rate = fill_rate
            self.buckets.clear()  # new sizes apply from the next request

    def set_user(self, user: User, limit: UserLimit) -> None:
        with self.lock:
            self.users[user.id] = limit
            self.buckets.pop(user.id, None)

    def delete_user(self, user: User) -> bool:
        with self.lock:
            self.buckets.pop(user.id, None)
            return self.users.pop(user.id, None) is not None

    def settings(self) -> dict[str, Any]:
        return {"enabled": self.enabled,
                "defaultSettings": {"capacity": self.capacity, "fillRate": self.fill_rate}}

    # ---- enforcement --------------------------------------------------------------------------

    def check(self, user: User) -> None:
        """Take a token for ``user`` or raise the 429 with ``Retry-After`` (whole seconds)."""
        with self.lock:
            limit = self.users.get(user.id, UserLimit())
            if not self.enabled or limit.whitelisted:
                return
            bucket = self.buckets.get(user.id)
            if bucket is None:
                bucket = self.buckets[user.id] = TokenBucket(
                    limit.capacity or self.capacity, limit.fill_rate or self.fill_rate,
                    clock=self.clock)
            wait = bucket.try_take()
            if wait <= 0:
                return
            rejects = self.rejects.setdefault(user.id, Rejects())
            rejects.count += 1
            rejects.last = int(time.time() * 1000)
        raise BitbucketError(429, "You have been rate limited. Please wait and try again.",
                             EX_RATE_LIMITED, headers={"Retry-After": str(max(1, math.ceil(wait)))})


def parse_limit(data: Any, *, field: str) -> tuple[int | None, int | None]:
    """``{"capacity": int, "fillRate": int}`` -> (capacity, fill rate); both positive."""
    if data is None:
        return None, None
    if not isinstance(data, dict):
        raise invalid(field, f"{field} must be an object with capacity and fillRate.")
    values = []
    for key in ("capacity", "fillRate"):
        value = data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise BitbucketError(400, f"{key} must be a positive whole number.", EX_VALIDATION,
                                 context=key)
        values.append(value)
    return values[0], values[1]
