"""Run history as indexed queries: what earlier runs of a DAG decide for the next one.

The last successful full run (the shrink baseline, the full-reconciliation interval), the newest
successful full-or-incremental run (the incremental watermark) and the failed-run streak are each
one query over ``sync_runs`` that the index ``ix_sync_runs_history (dag_id, status, mode,
started_at)`` serves. None of them reads a window of recent runs: hundreds of on-login runs of
another DAG since the last full run change nothing. Run state that decides a later run is read from
real columns (``users_in_scope``, ``data_as_of``, ``watermark``), never from the JSON ``counts``
(except ``counts.extract.users`` as the fallback for rows written before revision 0005).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select

from . import schema as t
from .store import AuditStore

# A run that applied what it planned; "conflicts" left undone only operations it reported as
# conflicts (an IDCS name colliding with an account the sync does not own); "superseded" left
# some identities to runs that planned for them from newer IDCS data (overlapping runs).
SUCCEEDED_STATUSES = ("succeeded", "conflicts", "superseded")
FAILED_STATUSES = ("failed", "blocked")
# Still going (or never meant to write): neither extends nor ends a failed streak.
UNFINISHED_STATUSES = ("running", "planned", "applying", "awaiting_approval", "dry_run")
# Modes whose extract covers the whole scope, or the changes since a watermark.
WATERMARK_MODES = ("full", "incremental")


def last_successful_run(store: AuditStore, dag_id: str, *, mode: str | None = "full",
                        exclude_run: str | None = None) -> dict[str, Any] | None:
    """The newest non-dry run of ``dag_id`` that succeeded (or ended with only reported
    conflicts) in ``mode`` (``None``: full or incremental), ``exclude_run`` left out; the row
    with ``users_in_scope`` filled from ``counts.extract.users`` for rows older than the column.
    """
    c = t.sync_runs.c
    modes = WATERMARK_MODES if mode is None else (mode,)
    query = (select(t.sync_runs)
             .where(c.dag_id == dag_id, c.status.in_(SUCCEEDED_STATUSES), c.mode.in_(modes),
                    c.dry_run.is_(False))
             .order_by(c.started_at.desc(), c.run_id.desc()).limit(1))
    if exclude_run is not None:
        query = query.where(c.run_id != exclude_run)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    run = dict(row._mapping)
    run["users_in_scope"] = users_in_scope(run)
    return run


def shrink_baseline(store: AuditStore, dag_id: str, *, exclude_run: str | None = None
                    ) -> tuple[int, str] | None:
    """``(users in scope, run id)`` of the last successful full run of ``dag_id``: what a new
    full extract is compared with; None without one (or when it recorded no user count)."""
    run = last_successful_run(store, dag_id, mode="full", exclude_run=exclude_run)
    if run is None or run["users_in_scope"] is None:
        return None
    return run["users_in_scope"], run["run_id"]


def failed_streak(store: AuditStore, dag_id: str, *, before_run: str | None = None) -> int:
    """How many of ``dag_id``'s latest finished runs failed (or were blocked) in a row, newest
    first, ``before_run`` left out: the failed runs newer than the newest finished run that did
    not fail. Dry runs and runs still going are skipped (they neither count nor end the streak).
    One failed run is noise, three in a row is an outage: the number to alert on."""
    c = t.sync_runs.c

    def of_dag(*where: Any) -> list[Any]:
        cond = [c.dag_id == dag_id, c.dry_run.is_(False), *where]
        return cond if before_run is None else [*cond, c.run_id != before_run]

    last_good = select(func.max(c.started_at)).where(*of_dag(
        c.status.not_in(FAILED_STATUSES + UNFINISHED_STATUSES))).scalar_subquery()
    query = select(func.count()).select_from(t.sync_runs).where(*of_dag(
        c.status.in_(FAILED_STATUSES), or_(last_good.is_(None), c.started_at > last_good)))
    with store.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def users_in_scope(run: dict[str, Any]) -> int | None:
    """A run's users in scope: its column, else ``counts.extract.users`` (rows before 0005)."""
    if run.get("users_in_scope") is not None:
        return int(run["users_in_scope"])
    users = ((run.get("counts") or {}).get("extract") or {}).get("users")
    return users if isinstance(users, int) else None
