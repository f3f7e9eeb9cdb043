"""
### IDCS → Bitbucket Data Center sync

Keeps Bitbucket users, groups, memberships and licences in step with Oracle IDCS.

extract IDCS → data-quality gate → mapping rules → read Bitbucket → plan (+ safety gate) →
apply in four phases (groups, users, removals, additions), each a dynamically mapped, retryable
task per batch → finish (status, counts, audit).

Connections: `idcs_default`, `bitbucket_default`, `sync_audit_db`. Rules: `include/sync_rules.yaml`
(or the file named by `IDSYNC_RULES_FILE`). Every run's plan, attempts, data-quality results and
quarantine are in the audit store, never in Airflow's metadata database.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, TriggerRule, chain, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from identity_sync_airflow.tasks import (
    APPLY_RETRY_POLICY,
    BITBUCKET_POOL,
    READ_RETRY_POLICY,
    RETRY_DELAY,
    SYNC_DAG_IDS,
    current_rules,
)

_SCHEDULE = os.environ.get("IDSYNC_SCHEDULE", "@hourly")
log = logging.getLogger(__name__)


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
                  "retry_policy": READ_RETRY_POLICY},
    params={
        "dry_run": Param(False, type="boolean",
                         description="Plan and record, but write nothing to Bitbucket."),
        "approve_deprovisioning": Param(
            False, type="boolean",
            description="Allow a plan that deprovisions more users than the safety limits."),
    },
)
def idcs_bitbucket_sync() -> None:
    @task
    def start_run() -> str:
        from identity_sync import pipeline
        from identity_sync_airflow.hooks import AuditStoreHook

        ctx = get_current_context()
        rules_hash = current_rules()[1]  # validates the rules before anything else runs
        sync_run = ctx["run_id"]
        pipeline.start(AuditStoreHook().get_conn(), sync_run, dag_id=ctx["dag"].dag_id,
                       trigger=str(ctx["dag_run"].run_type), mode="full",
                       dry_run=bool(ctx["params"]["dry_run"]), rules_hash=rules_hash)
        return sync_run

    @task
    def extract_idcs(sync_run: str) -> dict:
        from identity_sync import pipeline
        from identity_sync_airflow.hooks import AuditStoreHook, IdcsHook

        hook = IdcsHook()
        client = hook.get_conn()
        return pipeline.extract(AuditStoreHook().get_conn(), sync_run, client, current_rules()[0],
                                hook.app_id)

    @task(retries=0)
    def check_data_quality(sync_run: str, _extracted: dict) -> dict:
        from identity_sync import pipeline
        from identity_sync.quality.gate import CriticalDataQualityError
        from identity_sync_airflow.hooks import AuditStoreHook

        try:
            return pipeline.check_quality(AuditStoreHook().get_conn(), sync_run)
        except CriticalDataQualityError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def map_to_bitbucket(sync_run: str, _checked: dict) -> dict:
        from identity_sync import pipeline
        from identity_sync_airflow.hooks import AuditStoreHook

        return pipeline.map_desired(AuditStoreHook().get_conn(), sync_run, current_rules()[0])

    @task
    def read_bitbucket(sync_run: str, _mapped: dict) -> dict:
        from identity_sync import pipeline
        from identity_sync_airflow.hooks import AuditStoreHook, BitbucketHook

        return pipeline.read_bitbucket(AuditStoreHook().get_conn(), sync_run,
                                       BitbucketHook().get_conn())

    @task(retries=0)
    def plan_sync(sync_run: str, _current: dict) -> dict:
        from identity_sync import pipeline
        from identity_sync_airflow.hooks import AuditStoreHook, BitbucketHook

        params = get_current_context()["params"]
        options = pipeline.RunOptions(dry_run=bool(params["dry_run"]),
                                      approve_deprovisioning=bool(params["approve_deprovisioning"]))
        service_account = BitbucketHook().get_conn().username
        try:
            return pipeline.plan(AuditStoreHook().get_conn(), sync_run, current_rules()[0],
                                 service_account, options)
        except pipeline.SafetyGateError as exc:
            raise AirflowFailException(f"safety gate: {exc}") from exc

    @task
    def select_batches(batches: dict, phase: str) -> list[dict]:
        """The batch descriptors of one apply phase (Airflow cannot map over a dict key)."""
        return batches[phase]

    @task(map_index_template="{{ batch_label }}", pool=BITBUCKET_POOL, retries=4,
          retry_policy=APPLY_RETRY_POLICY, trigger_rule=TriggerRule.NONE_FAILED,
          max_active_tis_per_dagrun=4)
    def apply_batch(batch: dict) -> dict:
        from identity_sync import pipeline
        from identity_sync_airflow.hooks import AuditStoreHook, BitbucketHook

        get_current_context()["batch_label"] = batch["label"]
        notify = current_rules()[0].users.initial_password == "notify"
        result = pipeline.apply(AuditStoreHook().get_conn(), BitbucketHook().get_conn(), batch,
                                dag_ids=SYNC_DAG_IDS, notify=notify)
        result.raise_for_failures(batch["label"])
        return {"done": result.done, "already_done": result.already_done,
                "superseded": result.superseded}

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def finish_run(sync_run: str) -> dict:
        from identity_sync import pipeline
        from identity_sync_airflow.hooks import AuditStoreHook

        summary = pipeline.finish(AuditStoreHook().get_conn(), sync_run)
        log.info("%s", pipeline.format_summary(summary))
        if summary["status"] in ("failed", "blocked"):
            raise AirflowFailException(f"sync {summary['status']}: {summary['message']}")
        return summary

    sync_run = start_run()
    extracted = extract_idcs(sync_run)
    checked = check_data_quality(sync_run, extracted)
    mapped = map_to_bitbucket(sync_run, checked)
    current = read_bitbucket(sync_run, mapped)
    batches = plan_sync(sync_run, current)
    applied = []
    for phase in ("groups", "users", "removals", "additions"):
        refs = select_batches.override(task_id=f"{phase}_batches")(batches, phase)
        applied.append(apply_batch.override(task_id=f"apply_{phase}").expand(batch=refs))
    chain(*applied, finish_run(sync_run))

idcs_bitbucket_sync()
