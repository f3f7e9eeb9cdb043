"""A failed run whose apply tasks are cleared converges without writing anything twice and
without duplicating audit rows.

``dag.test()`` always starts a new run, so the test re-executes the failed run's apply batches and
its finish step with the DAG's own task functions, on the same run id: exactly what Airflow runs
when those task instances are cleared (the scheduler re-executes the same callables with the
same XCom inputs)."""

from __future__ import annotations

from collections import Counter

import pytest

from identity_sync.audit.store import AuditStore
from identity_sync.planning.operations import Operation, batch_refs
from identity_sync_airflow import tasks

from .conftest import Live
from .test_sync_dag import assert_in_step, expected_state

pytestmark = pytest.mark.e2e


def test_cleared_run_converges_without_duplicates(live: Live) -> None:
    state = live.bitbucket_control("GET", "state")
    seats = len(expected_state(live.idcs_dump())[0]) // 2
    state["settings"]["license_limit"] = seats  # the licence runs out half-way
    live.bitbucket_control("POST", "seed", json=state)
    failed = live.run_dag()
    assert str(failed.state) == "failed"
    store = AuditStore(live.audit_url)
    record = store.get_run(failed.run_id)
    assert record["status"] == "failed" and "licence" in record["message"].lower()
    attempts_before = store.attempts(failed.run_id)
    assert any(a["http_status"] == 403 for a in attempts_before)

    state = live.bitbucket_control("GET", "state")
    state["settings"]["license_limit"] = None  # more seats bought
    live.bitbucket_control("POST", "seed", json=state)
    live.bitbucket_control("DELETE", "calls")
    # Clear the failed apply tasks: every batch of the run is re-executed; done ones are no-ops.
    ops = [Operation.from_dict({k: op[k] for k in ("kind", "target", "params", "reason",
                                                   "before", "after", "idcs_id", "op_id",
                                                   "batch")})
           for op in store.plan(failed.run_id)]
    for phase_refs in batch_refs(failed.run_id, ops).values():
        tasks.apply_batches(phase_refs)
    summary = tasks.finish_run(failed.run_id)
    assert summary["status"] == "succeeded"
    assert_in_step(live)
    again = failed

    # Nothing written twice: each user created once over both attempts of the run ...
    calls = live.bitbucket_control("GET", "calls")
    done_before = {a["op_id"] for a in attempts_before if a["outcome"] == "done"}
    plan = store.plan(again.run_id)
    creates_left = sum(op["kind"] == "create_user" and op["op_id"] not in done_before
                       for op in plan)
    assert calls.get("POST /rest/api/1.0/admin/users", 0) == creates_left
    # ... and each operation is done exactly once in the audit trail.
    done = Counter(a["op_id"] for a in store.attempts(again.run_id) if a["outcome"] == "done")
    assert done and max(done.values()) == 1
    assert {op["status"] for op in plan} <= {"done", "superseded"}
