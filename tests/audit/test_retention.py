"""Retention: old runs and everything they own go, anchors and recent runs stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from identity_sync.audit import schema as t
from identity_sync.audit.retention import prune_from_env, retention_days

from .conftest import T1, Clock, History


def rows_of(history: History, run_id: str) -> dict[str, int]:
    with history.store.engine.connect() as conn:
        return {tb.name: conn.execute(select(func.count()).select_from(tb)
                                      .where(tb.c.run_id == run_id)).scalar()
                for tb in (t.sync_runs, t.run_artifacts, t.plan_operations,
                           t.operation_attempts, t.quarantine)}


def test_prune_deletes_old_runs_with_their_rows_and_keeps_anchors(history: History) -> None:
    assert rows_of(history, history.r1) == {"sync_runs": 1, "run_artifacts": 1,
                                            "plan_operations": 4, "operation_attempts": 4,
                                            "quarantine": 1}
    # r1 ended at T0+4m, r2 at T1+5m; 10 days after T1 with 10 days' retention: only r1 goes.
    deleted = history.store.prune(older_than_days=10, now=T1 + timedelta(days=10))
    assert deleted == {"operation_attempts": 4, "plan_operations": 4, "run_artifacts": 1,
                       "dq_results": 0, "quarantine": 1, "idcs_extract_endpoints": 0,
                       "idcs_user_ids": 0, "idcs_extracts": 0, "sync_runs": 1}
    assert rows_of(history, history.r1) == dict.fromkeys(rows_of(history, history.r1), 0)
    assert rows_of(history, history.r2)["operation_attempts"] == 4
    assert history.store.anchors() == {"u1": "alice.smith", "u2": "bob"}
    again = history.store.prune(older_than_days=10, now=T1 + timedelta(days=10))
    assert sum(again.values()) == 0


def test_prune_keeps_runs_inside_the_window_and_takes_abandoned_ones(history: History) -> None:
    store = history.store
    assert sum(store.prune(older_than_days=365, now=T1 + timedelta(days=1)).values()) == 0
    store.update_run(history.r2, ended_at=None, status="running")  # a run that never finished
    deleted = store.prune(older_than_days=30, now=T1 + timedelta(days=31))
    assert deleted["sync_runs"] == 2 and store.runs() == []


def test_prune_refuses_a_zero_window(history: History) -> None:
    with pytest.raises(ValueError):
        history.store.prune(older_than_days=0)


def test_retention_days_from_the_environment(history: History, clock: Clock) -> None:
    assert retention_days({}) == 365
    assert retention_days({"IDSYNC_AUDIT_RETENTION_DAYS": "30"}) == 30
    for bad in ("thirty", "0", "-5"):
        with pytest.raises(ValueError, match="IDSYNC_AUDIT_RETENTION_DAYS"):
            retention_days({"IDSYNC_AUDIT_RETENTION_DAYS": bad})
    clock.at(T1 + timedelta(days=300))
    assert prune_from_env(history.store, {})["sync_runs"] == 0  # default: a year
    assert prune_from_env(history.store, {"IDSYNC_AUDIT_RETENTION_DAYS": "299"}) == {
        "operation_attempts": 8, "plan_operations": 7, "run_artifacts": 2, "dq_results": 0,
        "quarantine": 1, "idcs_extract_endpoints": 0, "idcs_user_ids": 0, "idcs_extracts": 0,
        "sync_runs": 2}
    assert history.store.anchors() == {"u1": "alice.smith", "u2": "bob"}
