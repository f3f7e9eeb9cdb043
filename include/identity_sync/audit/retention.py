"""Retention policy for the audit store: how many days of runs to keep, from the environment."""

from __future__ import annotations

import logging
import os

from .store import AuditStore

ENV_DAYS = "IDSYNC_AUDIT_RETENTION_DAYS"
DEFAULT_DAYS = 365
log = logging.getLogger(__name__)


def retention_days(environ: dict[str, str] | None = None) -> int:
    """Days of runs to keep; a value that is not a positive integer is an error, not a default
    (a typo must not silently keep, or delete, a year of history)."""
    raw = (environ if environ is not None else os.environ).get(ENV_DAYS, str(DEFAULT_DAYS))
    try:
        days = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_DAYS}={raw!r} is not a whole number of days") from None
    if days < 1:
        raise ValueError(f"{ENV_DAYS}={raw!r}: keep at least 1 day")
    return days


def prune_from_env(store: AuditStore, environ: dict[str, str] | None = None) -> dict[str, int]:
    """Prune with the configured retention; returns rows deleted per table."""
    days = retention_days(environ)
    deleted = store.prune(older_than_days=days)
    log.info("audit retention %d days: deleted %s (identity anchors kept)", days, deleted)
    return deleted
