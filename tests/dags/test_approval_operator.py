"""The approval task in-process: no human for a plan within the limits, a parked request for
the named approvers otherwise, and what an answer (or none) does to the run in the audit store.
The real round trip (``awaiting_input``, 403, PATCH) is in ``tests/e2e/test_approval_rest.py``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import DAG, TriggerRule
from airflow.sdk.exceptions import DownstreamTasksSkipped, TaskAwaitingInput

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync_airflow import tasks
from identity_sync_airflow.approval import PlanApprovalOperator

NEEDED = {"needed": True, "reason": "plan takes access from 30 users", "summary": "**Why**",
          "approvers": ["admin", "ops"], "timeout_hours": 0.5}


class FakeTI:
    map_index = -1
    id = "0190f3b2-0000-7000-8000-000000000000"

    def __init__(self, planned: dict[str, Any]) -> None:
        self.planned, self.pushed = planned, {}

    def xcom_pull(self, task_ids: str) -> dict[str, Any]:
        assert task_ids == "plan_sync"
        return self.planned

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.fixture
def store(tmp_path, monkeypatch) -> AuditStore:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    monkeypatch.setattr(tasks, "_store", lambda: store)
    pipeline.start(store, "r1", dag_id="idcs_bitbucket_sync", trigger="manual", mode="full",
                   dry_run=False, rules_hash="t")
    return store


def operator() -> PlanApprovalOperator:
    with DAG("approval_test", schedule=None):
        plan = PlanApprovalOperator(task_id="plan_sync", plan_task_id="x")  # any upstream
        approve = PlanApprovalOperator(task_id="approve_plan", plan_task_id="plan_sync")
        apply = PlanApprovalOperator(task_id="apply_users", plan_task_id="x")
        finish = PlanApprovalOperator(task_id="finish_run", plan_task_id="x",
                                      trigger_rule=TriggerRule.ALL_DONE)
        plan >> approve >> apply >> finish
    return approve


def context(approval: dict[str, Any]) -> dict[str, Any]:
    ti = FakeTI({"batches": {}, "approval": approval})
    return {"ti": ti, "task_instance": ti, "run_id": "r1", "task": operator()}


def test_a_plan_within_the_limits_passes_without_asking_anyone(store, monkeypatch) -> None:
    def never(**_: Any) -> None:
        raise AssertionError("no human-in-the-loop request for a normal run")

    monkeypatch.setattr("airflow.providers.standard.operators.hitl.upsert_hitl_detail", never)
    ctx = context({"needed": False, "reason": None, "summary": "", "approvers": ["admin"],
                   "timeout_hours": 24})
    store.update_run("r1", status="planned")
    assert ctx["task"].execute(ctx) == {"approval": "not needed"}
    assert store.get_run("r1")["status"] == "planned"


def test_a_tripped_gate_parks_for_the_named_approvers(store, monkeypatch) -> None:
    requests: list[dict[str, Any]] = []
    monkeypatch.setattr("airflow.providers.standard.operators.hitl.upsert_hitl_detail",
                        lambda **kw: requests.append(kw))
    store.update_run("r1", status="awaiting_approval", message=NEEDED["reason"])
    ctx = context(NEEDED)
    with pytest.raises(TaskAwaitingInput) as parked:
        ctx["task"].execute(ctx)
    assert parked.value.timeout == timedelta(minutes=30)
    (request,) = requests
    assert request["assigned_users"] == [{"id": "admin", "name": "admin"},
                                         {"id": "ops", "name": "ops"}]
    assert request["options"] == ["Approve", "Reject"] and request["body"] == "**Why**"
    assert request["subject"].endswith("Run r1")


def test_approve_records_the_approver_and_lets_the_plan_apply(store) -> None:
    store.update_run("r1", status="awaiting_approval", message=NEEDED["reason"])
    ctx = context(NEEDED)
    result = ctx["task"].execute_complete(ctx, {
        "chosen_options": ["Approve"], "params_input": {}, "responded_at": pipeline.utcnow(),
        "responded_by_user": {"id": "ops", "name": "ops"}})
    assert result == {"approval": "approved", "approved_by": "ops"}
    run = store.get_run("r1")
    assert (run["status"], run["approved_by"]) == ("planned", "ops")


def test_reject_blocks_the_run_and_skips_the_apply_tasks_not_finish(store) -> None:
    store.update_run("r1", status="awaiting_approval", message=NEEDED["reason"])
    ctx = context(NEEDED)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        ctx["task"].execute_complete(ctx, {
            "chosen_options": ["Reject"], "params_input": {}, "responded_at": pipeline.utcnow(),
            "responded_by_user": {"id": "admin", "name": "admin"}})
    assert skipped.value.tasks == ["apply_users"]
    run = store.get_run("r1")
    assert run["status"] == "blocked"
    assert run["message"] == f"rejected by admin: {NEEDED['reason']}"


def test_no_answer_in_time_blocks_the_run_with_one_line(store) -> None:
    store.update_run("r1", status="awaiting_approval", message=NEEDED["reason"])
    ctx = context(NEEDED)
    with pytest.raises(DownstreamTasksSkipped):
        ctx["task"].execute_complete(ctx, {"error": "timeout has passed",
                                           "error_type": "timeout"})
    run = store.get_run("r1")
    assert run["status"] == "blocked"
    assert run["message"] == (f"no approval within 30min from approvers admin, ops: "
                              f"{NEEDED['reason']}")


def test_a_run_blocked_at_planning_asks_nobody(store) -> None:
    store.update_run("r1", status="blocked", message="nobody can approve it")
    ctx = context({**NEEDED, "approvers": []})
    with pytest.raises(DownstreamTasksSkipped):
        ctx["task"].execute(ctx)
