"""The approval task: a plan that tripped a safety gate waits here for a named approver.

A human-in-the-loop task (Airflow 3.3's standard provider ``ApprovalOperator``) placed between
the plan and the apply tasks. Normal runs pass straight through; a run whose plan needs approval
parks in ``awaiting_input`` (Airflow UI: Required Actions) for the approvers the rules name
(``safety.approvers``; Airflow answers 403 to anyone else) for ``safety.approval_timeout_hours``.

- **Approve**: ``sync_runs.approved_by`` is recorded, the run's status goes back to ``planned``,
  and the apply tasks run exactly the recorded plan.
- **Reject**, or no answer in time: the run ends ``blocked`` with a one-line reason, the apply
  tasks are skipped (and would refuse to write anyway), and the finish task fails the DAG run.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import TriggerRule

SUBJECT = "Identity sync: approve this plan?"


class PlanApprovalOperator(ApprovalOperator):
    """Approve or reject the plan recorded by ``plan_task_id`` (whose XCom holds
    ``{"batches": ..., "approval": {"needed", "reason", "summary", "approvers",
    "timeout_hours"}}``, see ``identity_sync.pipeline.plan``)."""

    def __init__(self, *, plan_task_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)  # a human's answer (or its absence) is not retried
        super().__init__(subject=SUBJECT, **kwargs)
        self.plan_task_id = plan_task_id

    def _approval(self, context: Any) -> dict[str, Any]:
        planned = context["ti"].xcom_pull(task_ids=self.plan_task_id) or {}
        return planned.get("approval") or {}

    def execute(self, context: Any) -> Any:
        from identity_sync import pipeline
        from identity_sync_airflow.tasks import _store

        approval = self._approval(context)
        if not approval.get("needed"):
            self.log.info("no approval needed: the plan is within the safety limits")
            return {"approval": "not needed"}
        run_id = context["run_id"]
        run = _store().get_run(run_id) or {}
        status = run.get("status")
        if status == "blocked":  # nobody can approve (no approvers), or already rejected
            self.log.warning("run blocked: %s", run.get("message"))
            return self._skip_apply(context)
        if status != "awaiting_approval":  # approved before: this task was cleared and re-run
            self.log.info("run %s is %s (approved by %s): nothing to ask", run_id, status,
                          run.get("approved_by"))
            return {"approval": "approved", "approved_by": run.get("approved_by")}
        approvers = list(approval["approvers"])
        hours = float(approval["timeout_hours"])
        self.assigned_users = [{"id": a, "name": a} for a in approvers]
        self.response_timeout = timedelta(hours=hours)
        self.subject = f"{SUBJECT} Run {run_id}"
        self.body = approval["summary"]
        self.log.warning("safety gate: %s; waiting up to %s for %s to approve or reject",
                         approval["reason"], pipeline.format_hours(hours), ", ".join(approvers))
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from identity_sync import pipeline
        from identity_sync_airflow.tasks import _store

        approval, run_id, store = self._approval(context), context["run_id"], _store()
        if event.get("error_type") == "timeout":
            hours = pipeline.format_hours(float(approval["timeout_hours"]))
            pipeline.block_run(store, run_id, f"no approval within {hours} from approvers "
                               f"{', '.join(approval['approvers'])}: {approval['reason']}")
            return self._skip_apply(context)
        answer = HITLOperator.execute_complete(self, context, event)  # validates the answer
        user = answer.get("responded_by_user") or {}
        who = user.get("id") or user.get("name") or "unknown user"
        if answer["chosen_options"] == [self.APPROVE]:
            pipeline.approve_run(store, run_id, who)
            self.log.info("approved by %s: applying the recorded plan", who)
            return {"approval": "approved", "approved_by": who}
        pipeline.block_run(store, run_id, f"rejected by {who}: {approval['reason']}")
        return self._skip_apply(context)

    def _skip_apply(self, context: Any) -> dict[str, str]:
        """Skip every task after this one except those that run whatever happens (finish);
        ``skip`` ends the task by raising, so the return value is only for no such task."""
        tasks = [t for t in context["task"].get_flat_relatives(upstream=False)
                 if t.trigger_rule != TriggerRule.ALL_DONE and not t.is_teardown]
        self.log.info("skipping %s", ", ".join(sorted(t.task_id for t in tasks)) or "nothing")
        self.skip(ti=context["ti"], tasks=tasks)
        return {"approval": "blocked"}
