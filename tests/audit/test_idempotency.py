"""A retried or cleared task repeats its writes: no table may gain a row (invariant 6)."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from identity_sync.audit import schema as t
from identity_sync.audit.queries import aware
from identity_sync.audit.store import AuditStore
from identity_sync.planning.operations import Operation, OpKind

from .conftest import T0, Clock

RUN = "manual__2026-03-01T10:00:00+00:00"
TABLES = [t.sync_runs, t.run_artifacts, t.plan_operations, t.operation_attempts,
          t.identity_anchors, t.dq_results, t.quarantine]


def row_counts(store: AuditStore) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {tb.name: conn.execute(select(func.count()).select_from(tb)).scalar()
                for tb in TABLES}


def ops() -> list[Operation]:
    return [Operation(OpKind.CREATE_USER, "alice", {"name": "alice"}, "new", idcs_id="u1"),
            Operation(OpKind.CREATE_USER, "bob", {"name": "bob"}, "new", idcs_id="u2"),
            Operation(OpKind.ADD_MEMBERS, "devs", {"group": "devs", "users": ["alice", "bob"]},
                      "member in IDCS")]


def every_task_once(store: AuditStore) -> None:
    """The writes of start, extract, quality, mapping, read, plan and a cleared apply task."""
    store.start_run(RUN, dag_id="d", trigger="manual", mode="full", dry_run=False,
                    rules_hash="h", rules_version="1")
    store.put_artifact(RUN, "idcs_snapshot", {"users": [{"id": "u1"}, {"id": "u2"}]}, 2)
    store.record_dq(RUN, [{"suite": "users", "expectation": "email_regex", "severity": "record",
                           "success": False, "unexpected_count": 1, "sample": ["x"]}])
    store.record_quarantine(RUN, [{"record_type": "user", "record_id": "u3",
                                   "reason": "invalid email", "expectation": "email_regex",
                                   "value": "x"}])
    store.put_artifact(RUN, "desired_state", {"users": []}, 0)
    store.put_artifact(RUN, "bitbucket_state", {"users": []}, 0)
    store.record_plan(RUN, ops())
    for op, status in store.batch_operations(RUN, "users", 0):  # an apply task, as apply does
        if status == "done":
            continue
        store.record_attempt(RUN, op.op_id, outcome="done", http_status=201, error=None,
                             started=time.monotonic())
        store.save_anchors(RUN, {op.idcs_id or "": op.target})


def test_every_write_repeated_changes_no_row_count(audit_url: str, clock: Clock) -> None:
    store = AuditStore(audit_url)
    every_task_once(store)
    first = row_counts(store)
    assert first == {"sync_runs": 1, "run_artifacts": 3, "plan_operations": 3,
                     "operation_attempts": 2, "identity_anchors": 2, "dq_results": 1,
                     "quarantine": 1}
    clock.at(T0.replace(hour=11))
    every_task_once(store)  # the whole run retried
    every_task_once(store)
    assert row_counts(store) == first
    run = store.get_run(RUN)
    assert aware(run["started_at"]) == T0  # the retried start kept the original start time
    assert {op["target"]: op["status"] for op in store.plan(RUN)} == {
        "alice": "done", "bob": "done", "devs": "planned"}
    assert [aware(op["planned_at"]) for op in store.plan(RUN)] == [T0] * 3  # re-plan keeps first time
    store.dispose()


def test_a_retried_attempt_is_a_new_attempt_not_a_new_operation(audit_url: str) -> None:
    """A failed operation re-run by a task retry adds attempt 2; its plan row is updated."""
    store = AuditStore(audit_url)
    plan = ops()
    store.record_plan(RUN, plan)
    store.record_attempt(RUN, plan[0].op_id, outcome="failed", http_status=503, error="busy",
                         started=time.monotonic())
    store.record_attempt(RUN, plan[0].op_id, outcome="done", http_status=201, error=None,
                         started=time.monotonic())
    assert [(a["attempt"], a["outcome"], a["http_status"]) for a in store.attempts(RUN)] == [
        (1, "failed", 503), (2, "done", 201)]
    assert row_counts(store)["plan_operations"] == 3
    assert store.plan(RUN)[0]["status"] == "done"
    store.dispose()


def test_later_writes_replace_earlier_ones_where_they_should(audit_url: str) -> None:
    store = AuditStore(audit_url)
    store.record_quarantine(RUN, [{"record_type": "user", "record_id": "u3", "reason": "old",
                                   "expectation": None, "value": None}])
    store.record_quarantine(RUN, [{"record_type": "user", "record_id": "u3", "reason": "new",
                                   "expectation": "e", "value": "v"}])
    [row] = store.quarantined(RUN)
    assert (row["reason"], row["value"]) == ("new", "v")
    store.save_anchors("r1", {"u1": "alice"})
    store.save_anchors("r2", {"u1": "alice.smith"})
    with store.engine.connect() as conn:
        anchor = conn.execute(select(t.identity_anchors)).one()._mapping
    assert (anchor["bitbucket_name"], anchor["first_run_id"], anchor["last_run_id"]) == (
        "alice.smith", "r1", "r2")
    store.dispose()
