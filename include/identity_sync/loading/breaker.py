"""Circuit breaker for the apply: stop writing when Bitbucket keeps refusing.

Why: Entra quarantines a provisioning job when most calls fail (bad credentials, an outage);
carrying on only hammers a sick server, locks the service account behind a CAPTCHA, and turns
one clear cause into thousands of failed rows. The client already retries transient answers;
an operation that still fails counts here. The breaker opens on any of:

- bad credentials or an unlicensed service account (Bitbucket's 401 with that exception name),
  at once: nothing else can succeed;
- ``max_auth_failures`` 401s: the account lacks the permission it needs;
- ``max_consecutive_failures`` failed operations in a row (a 5xx storm, the network gone);
- a failure share above ``max_failure_percent`` once ``min_operations`` were tried.

Once open, the batch writes nothing more; the remaining operations are recorded as not
attempted and the task fails with one sentence naming the cause.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..http import ApiError

BREAKER_OPEN = "circuit breaker open"
# 401 exception names that mean "this account cannot sign in": nothing else will work.
FATAL_AUTH = ("IncorrectPasswordAuthenticationException", "NoAccessAuthenticationException",
              "CaptchaRequiredAuthenticationException")


@dataclass(frozen=True)
class BreakerSettings:
    """Thresholds (rules file: ``apply.circuit_breaker``)."""

    max_failure_percent: float = 20.0
    min_operations: int = 20
    max_consecutive_failures: int = 5
    max_auth_failures: int = 3


@dataclass
class CircuitBreaker:
    """Counts one batch's outcomes; ``reason`` is set once it opens and never cleared."""

    settings: BreakerSettings = field(default_factory=BreakerSettings)
    tried: int = 0
    failed: int = 0
    consecutive: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    reason: str | None = None

    @property
    def open(self) -> bool:
        return self.reason is not None

    def success(self) -> None:
        self.tried += 1
        self.consecutive = 0

    def failure(self, err: ApiError) -> str | None:
        """Count a failed operation; returns the reason when this failure opens the breaker."""
        self.tried += 1
        self.failed += 1
        self.consecutive += 1
        label = str(err.status) if err.status else "no answer"
        self.statuses[label] += 1
        s = self.settings
        if self.reason is not None:
            return None
        name = getattr(err, "exception_name", None) or ""
        if err.status == 401 and any(name.endswith(fatal) for fatal in FATAL_AUTH):
            self.reason = (f"Bitbucket refused the service account's credentials ({err.message}); "
                           "fix the bitbucket_default connection (password, CAPTCHA lock, "
                           "licence) before re-running")
        elif err.status == 401 and self.statuses["401"] >= s.max_auth_failures:
            self.reason = (f"{self.statuses['401']} operations refused with 401: the service "
                           "account lacks global ADMIN, or its credentials stopped working")
        elif self.consecutive >= s.max_consecutive_failures:
            self.reason = (f"{self.consecutive} operations in a row failed "
                           f"({self._mix()}); Bitbucket looks unavailable")
        elif self.tried >= s.min_operations and \
                100.0 * self.failed / self.tried > s.max_failure_percent:
            self.reason = (f"{self.failed} of {self.tried} operations failed "
                           f"({100.0 * self.failed / self.tried:.0f}%, limit "
                           f"{s.max_failure_percent:g}%: {self._mix()})")
        if self.reason is not None:
            self.reason = f"{BREAKER_OPEN}: {self.reason}"
        return self.reason

    def _mix(self) -> str:
        return ", ".join(f"{n}× {status}" for status, n in self.statuses.most_common(4))


def breaker_settings(rules: object) -> BreakerSettings:
    """The thresholds from the rules' ``apply.circuit_breaker`` section."""
    section = rules.apply.circuit_breaker  # type: ignore[attr-defined]
    return BreakerSettings(**section.model_dump())

