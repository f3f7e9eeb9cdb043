"""
### IDCS → Bitbucket Data Center sync

Keeps Bitbucket users, groups, memberships and licences in step with Oracle IDCS.

extract IDCS → data-quality gate → mapping rules → read Bitbucket → plan (+ safety gates) →
approve_plan (passes at once unless a safety gate tripped; then it waits for an approver named in
the rules, under Required Actions) → apply in four phases (groups, users, removals, additions),
each a dynamically mapped, retryable task per batch → finish (status, counts, audit).

Connections: `idcs_default`, `bitbucket_default`, `sync_audit_db`. Rules: `include/sync_rules.yaml`
(or the file named by `IDSYNC_RULES_FILE`). Schedule: `IDSYNC_SCHEDULE` (default hourly). Every
run's plan, attempts, data-quality results and quarantine are in the audit store, never in
Airflow's metadata database. Trigger with `dry_run` to read the plan first; `users` / `groups`
sync part of the organisation only.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, TriggerRule, chain, dag, get_current_context, task

from identity_sync_airflow.approval import PlanApprovalOperator
from identity_sync_airflow.tasks import (
    APPLY_RETRY_POLICY,
    BITBUCKET_POOL,
    READ_RETRY_POLICY,
    RETRY_DELAY,
    on_failure,
)

_SCHEDULE = os.environ.get("IDSYNC_SCHEDULE", "@hourly")


@dag(
    dag_id=Path(__file__).stem,
    schedule=None if _SCHEDULE.lower() == "none" else _SCHEDULE,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["identity", "idcs", "bitbucket"],
    doc_md=__doc__,
    default_args={"owner": "identity-sync", "retries": 3, "retry_delay": RETRY_DELAY,
                  "retry_exponential_backoff": 2.0, "max_retry_delay": timedelta(minutes=10),
                  "retry_policy": READ_RETRY_POLICY, "on_failure_callback": on_failure},
    params={
        "mode": Param("auto", enum=["auto", "full", "incremental"],
                      description="auto: incremental, with a full reconciliation when the last "
                                  "one is older than IDSYNC_FULL_EVERY_HOURS (default 24)."),
        "dry_run": Param(False, type="boolean",
                         description="Plan and record, but write nothing to Bitbucket."),
        "users": Param([], type="array", items={"type": "string"},
                       description="Sync only these IDCS userNames (empty: everybody)."),
        "groups": Param([], type="array", items={"type": "string"},
                        description="Sync only the members of these IDCS groups (empty: all)."),
    },
)
def idcs_bitbucket_sync() -> None:
    @task
    def start_run() -> str:
        from identity_sync_airflow import tasks

        params = get_current_context()["params"]
        mode = "subset" if params["users"] or params["groups"] else params["mode"]
        return tasks.start_run(mode=mode, dry_run=bool(params["dry_run"]))

    @task
    def extract_idcs(sync_run: str) -> dict:
        from identity_sync_airflow import tasks

        params = get_current_context()["params"]
        return tasks.extract(sync_run, params["users"], params["groups"])

    @task(retries=0)
    def check_data_quality(sync_run: str, _extracted: dict) -> dict:
        from identity_sync_airflow import tasks

        return tasks.check_quality(sync_run)

    @task
    def map_to_bitbucket(sync_run: str, _checked: dict) -> dict:
        from identity_sync_airflow import tasks

        return tasks.map_desired(sync_run)

    @task
    def read_bitbucket(sync_run: str, _mapped: dict) -> dict:
        from identity_sync_airflow import tasks

        return tasks.read_bitbucket(sync_run)

    @task(retries=0)
    def plan_sync(sync_run: str, _current: dict) -> dict:
        from identity_sync_airflow import tasks

        params = get_current_context()["params"]
        return tasks.plan(sync_run, dry_run=bool(params["dry_run"]))

    @task
    def select_batches(planned: dict, phase: str) -> list[dict]:
        """The batch descriptors of one apply phase (Airflow cannot map over a dict key)."""
        return planned["batches"][phase]

    @task(map_index_template="{{ batch_label }}", pool=BITBUCKET_POOL, retries=4,
          retry_policy=APPLY_RETRY_POLICY, trigger_rule=TriggerRule.NONE_FAILED,
          max_active_tis_per_dagrun=4)
    def apply_batch(batch: dict) -> dict:
        from identity_sync_airflow import tasks

        get_current_context()["batch_label"] = batch["label"]
        return tasks.apply_batches([batch])

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def finish_run(sync_run: str) -> dict:
        from identity_sync_airflow import tasks

        return tasks.finish_run(sync_run)

    sync_run = start_run()
    extracted = extract_idcs(sync_run)
    checked = check_data_quality(sync_run, extracted)
    mapped = map_to_bitbucket(sync_run, checked)
    current = read_bitbucket(sync_run, mapped)
    planned = plan_sync(sync_run, current)
    approved = PlanApprovalOperator(task_id="approve_plan", plan_task_id="plan_sync")
    planned >> approved
    applied = []
    for phase in ("groups", "users", "removals", "additions"):
        refs = select_batches.override(task_id=f"{phase}_batches")(planned, phase)
        approved >> refs
        applied.append(apply_batch.override(task_id=f"apply_{phase}").expand(batch=refs))
    chain(*applied, finish_run(sync_run))


idcs_bitbucket_sync()
