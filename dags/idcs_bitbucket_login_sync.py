"""
### On-login sync of one IDCS user into Bitbucket

Triggered through Airflow's REST API when a user signs in, with the username in `conf`
(`{"username": "jane.doe"}`). It extracts that user and their groups only, and applies the same
rules, data-quality gate and safety gates as the full sync, in four tasks to keep it fast:
prepare (extract → quality → mapping → read Bitbucket → plan), approve_plan (passes at once
unless a safety gate tripped), apply, finish.
See the README, "Operating it", for the exact REST calls.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

from identity_sync_airflow.approval import PlanApprovalOperator
from identity_sync_airflow.tasks import (
    APPLY_RETRY_POLICY,
    BITBUCKET_POOL,
    READ_RETRY_POLICY,
    RETRY_DELAY,
    on_failure,
)


@dag(
    dag_id=Path(__file__).stem,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=8,
    tags=["identity", "idcs", "bitbucket", "on-login"],
    doc_md=__doc__,
    default_args={"owner": "identity-sync", "retries": 2, "retry_delay": RETRY_DELAY,
                  "retry_policy": READ_RETRY_POLICY, "on_failure_callback": on_failure},
    params={
        "username": Param("", type="string", minLength=1,
                          description="IDCS userName of the user who signed in."),
        "dry_run": Param(False, type="boolean", description="Plan and record only."),
    },
)
def idcs_bitbucket_login_sync() -> None:
    @task(retries=1)
    def prepare() -> dict:
        from identity_sync_airflow.tasks import prepare_run

        params = get_current_context()["params"]
        return prepare_run(users=[params["username"]], groups=[], dry_run=bool(params["dry_run"]))

    @task(pool=BITBUCKET_POOL, retries=3, retry_policy=APPLY_RETRY_POLICY)
    def apply(prepared: dict) -> dict:
        from identity_sync_airflow.tasks import apply_batches

        return apply_batches(prepared["batches"])

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def finish() -> dict:
        from identity_sync_airflow.tasks import finish_run

        return finish_run(get_current_context()["run_id"])

    prepared = prepare()
    approved = PlanApprovalOperator(task_id="approve_plan", plan_task_id="prepare")
    prepared >> approved >> apply(prepared) >> finish()


idcs_bitbucket_login_sync()
