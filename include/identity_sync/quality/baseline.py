"""Row counts of the last successful run, the baseline a shrinking extract is compared with.

A partial extract that still looks well-formed (IDCS answered, but with half the users) is only
visible against history; the check must stop it before the safety gate, because by then
Bitbucket has already been read.
"""

from __future__ import annotations

from typing import Any

from ..audit.store import AuditStore

# Runs over part of the organisation (a subset, one user, the users changed since the last run):
# their counts are not comparable with a full extract.
SUBSET_MODES = ("subset", "user", "incremental")
LOOKBACK = 200


def previous_users(store: AuditStore, run_id: str) -> tuple[int, str] | None:
    """``(users, run id)`` of the newest earlier successful full, non-dry run of the same DAG
    that recorded an extract count; None for the first run or a subset run."""
    run = store.get_run(run_id) or {}
    if run.get("mode") in SUBSET_MODES:
        return None
    for other in store.runs(limit=LOOKBACK):
        if other["run_id"] == run_id or not _comparable(other, run):
            continue
        users = ((other.get("counts") or {}).get("extract") or {}).get("users")
        if isinstance(users, int):
            return users, other["run_id"]
    return None


def _comparable(other: dict[str, Any], run: dict[str, Any]) -> bool:
    return (other["dag_id"] == run.get("dag_id") and other["status"] == "succeeded"
            and not other["dry_run"] and other.get("mode") not in SUBSET_MODES)
