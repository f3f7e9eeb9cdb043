"""Row counts of the last successful run, the baseline a shrinking extract is compared with.

A partial extract that still looks well-formed (IDCS answered, but with half the users) is only
visible against history; the check must stop it before the safety gate, because by then
Bitbucket has already been read.
"""

from __future__ import annotations

from ..audit import history
from ..audit.store import AuditStore

# Runs over part of the organisation (a subset, one user, the users changed since the last run):
# their counts are not comparable with a full extract.
SUBSET_MODES = ("subset", "user", "incremental")


def previous_users(store: AuditStore, run_id: str) -> tuple[int, str] | None:
    """``(users in scope, run id)`` of the newest other successful full, non-dry run of the same
    DAG (one indexed query, however many runs of other DAGs came since); None for the first run
    or a subset run."""
    run = store.get_run(run_id)
    if run is None or run["mode"] in SUBSET_MODES:
        return None
    return history.shrink_baseline(store, run["dag_id"], exclude_run=run_id)
