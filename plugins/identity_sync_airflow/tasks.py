"""What the sync DAGs' tasks share: rules, connections, the stage calls, and turning domain
errors into Airflow outcomes (fail fast on what needs a human, retry what is transient)."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule, get_current_context
from airflow.sdk.exceptions import AirflowFailException

from identity_sync.mapping.rules import DEFAULT_RULES_PATH, SyncRules, load_rules

log = logging.getLogger(__name__)

SYNC_DAG_ID = "idcs_bitbucket_sync"
LOGIN_DAG_ID = "idcs_bitbucket_login_sync"
SYNC_DAG_IDS = (SYNC_DAG_ID,)
BITBUCKET_POOL = "bitbucket_api"
BITBUCKET_POOL_SLOTS = 4
# First retry delay (grows exponentially); tests shorten it so a failure does not stall them.
RETRY_DELAY = timedelta(seconds=float(os.environ.get("IDSYNC_RETRY_DELAY_SECONDS", "30")))

# Retry transient API trouble with backoff; fail at once on what a retry cannot fix.
APPLY_RETRY_POLICY = ExceptionRetryPolicy(rules=[
    RetryRule(exception="identity_sync.loading.apply.PermanentApplyError",
              action=RetryAction.FAIL, reason="permanent Bitbucket error: retrying cannot help"),
    RetryRule(exception="identity_sync.loading.apply.TransientApplyError",
              action=RetryAction.RETRY, retry_delay=RETRY_DELAY,
              reason="transient Bitbucket error: retrying the unfinished operations"),
])
READ_RETRY_POLICY = ExceptionRetryPolicy(rules=[
    # First: rules match in order and ListingChangedError subclasses PartialExtractError (FAIL
    # below). No retry_delay: the task's own exponential backoff applies.
    RetryRule(exception="identity_sync.idcs.client.ListingChangedError",
              action=RetryAction.RETRY,
              reason="the IDCS listing changed while it was read: reading it again later"),
    RetryRule(exception=["identity_sync.mapping.rules.RulesError",
                         "identity_sync.idcs.client.PartialExtractError",
                         "identity_sync.idcs.extract.ScopeError",
                         "identity_sync.quality.gate.CriticalDataQualityError",
                         "identity_sync.pipeline.SafetyGateError"],
              action=RetryAction.FAIL, reason="needs a human: see the task log"),
])


def rules_path() -> Path:
    return Path(os.environ.get("IDSYNC_RULES_FILE", DEFAULT_RULES_PATH))


def current_rules() -> tuple[SyncRules, str]:
    return load_rules(rules_path())


def on_failure(context: dict[str, Any]) -> None:
    """One readable line per failed task, for the log and for notifiers to forward; the first
    failure's reason also becomes the run's message in the audit store."""
    ti = context.get("task_instance") or context.get("ti")
    error = context.get("exception")
    reason = str(error).splitlines()[0] if error else "unknown error"
    task_id, run_id = getattr(ti, "task_id", "?"), context.get("run_id")
    streak = failed_streak(getattr(ti, "dag_id", "?"), run_id)
    log.error("identity sync %s.%s failed (run %s%s): %s", getattr(ti, "dag_id", "?"), task_id,
              run_id, f"; {streak} failed runs in a row" if streak > 1 else "", reason)
    try:
        store = _store()
        run = store.get_run(run_id) if run_id else None
        if run and not run.get("message") and run["status"] in ("running", "planned", "applying"):
            store.update_run(run_id, message=f"{task_id} failed: {reason}")
    except Exception:  # a callback must never hide the task's own failure
        log.exception("could not record the failure in the audit store")


def failed_streak(dag_id: str, run_id: str | None) -> int:
    """Failed runs in a row, this one included, also kept in the run's ``failed_streak``
    column (``sync_runs.failed_streak``) so an alert can query it; 0 when the store is
    unreachable."""
    from identity_sync.audit import history

    try:
        store = _store()
        streak = history.failed_streak(store, dag_id, before_run=run_id) + 1
        if run_id:
            store.update_run(run_id, failed_streak=streak)
        return streak
    except Exception:  # a callback must never hide the task's own failure
        log.exception("could not count the failed runs in the audit store")
        return 0


# -- stage calls shared by the DAGs -----------------------------------------------------------------
def _store() -> Any:  # AuditStore, imported lazily
    from identity_sync_airflow.hooks import AuditStoreHook

    return AuditStoreHook().get_conn()


FULL_EVERY = timedelta(hours=float(os.environ.get("IDSYNC_FULL_EVERY_HOURS", "24")))


def start_run(*, mode: str, dry_run: bool) -> str:
    """Record the run; ``auto`` / ``incremental`` resolve to what this run will really do."""
    from identity_sync import pipeline

    ctx = get_current_context()
    rules, rules_hash = current_rules()  # validates the rules before anything else runs
    sync_run, store = ctx["run_id"], _store()
    run_type = ctx["dag_run"].run_type
    pipeline.start(store, sync_run, dag_id=ctx["dag"].dag_id,
                   trigger=str(getattr(run_type, "value", run_type)), mode=mode, dry_run=dry_run,
                   rules_hash=rules_hash, rules_version=str(rules.version))
    if mode in ("auto", "full", "incremental"):
        resolved, since = pipeline.resolve_mode(store, sync_run, mode, FULL_EVERY)
        store.update_run(sync_run, mode=resolved, watermark=since)
        log.info("run mode: %s%s", resolved, f" (changes since {since})" if since else "")
    return sync_run


def extract(sync_run: str, users: list[str], groups: list[str]) -> dict:
    from identity_sync import pipeline
    from identity_sync.subset import Subset
    from identity_sync_airflow.hooks import IdcsHook

    hook, store = IdcsHook(), _store()
    client = hook.get_conn()
    run = store.get_run(sync_run) or {}
    since = run.get("watermark") if run.get("mode") == "incremental" else None
    return pipeline.extract(store, sync_run, client, current_rules()[0], hook.app_id,
                            subset=Subset.from_params(users, groups) or None, since=since)


def check_quality(sync_run: str) -> dict:
    from identity_sync import pipeline
    from identity_sync.quality.gate import CriticalDataQualityError

    try:
        return pipeline.check_quality(_store(), sync_run)
    except CriticalDataQualityError as exc:
        raise AirflowFailException(str(exc)) from exc


def map_desired(sync_run: str) -> dict:
    """Map with the rules, then check the mapped state (its suites quarantine bad results)."""
    from identity_sync import pipeline
    from identity_sync.quality.gate import CriticalDataQualityError

    store, rules = _store(), current_rules()[0]
    counts = pipeline.map_desired(store, sync_run, rules)
    try:
        return {**counts, "checked": pipeline.check_desired_quality(store, sync_run, rules)}
    except CriticalDataQualityError as exc:
        raise AirflowFailException(str(exc)) from exc


def read_bitbucket(sync_run: str) -> dict:
    from identity_sync import pipeline
    from identity_sync_airflow.hooks import BitbucketHook

    return pipeline.read_bitbucket(_store(), sync_run, BitbucketHook().get_conn())


def plan(sync_run: str, *, dry_run: bool) -> dict:
    """``{"batches": {phase: [...]}, "approval": {...}}``: a tripped safety gate does not fail
    the task; the approval task after it waits for a named approver (``approval.py``)."""
    from identity_sync import pipeline
    from identity_sync_airflow.hooks import BitbucketHook

    return pipeline.plan(_store(), sync_run, current_rules()[0],
                         BitbucketHook().get_conn().username,
                         pipeline.RunOptions(dry_run=dry_run))


def apply_batches(batches: list[dict] | dict[str, list[dict]]) -> dict:
    """Apply batch descriptors in order (a dict is taken phase by phase); raise for failures."""
    from identity_sync import pipeline
    from identity_sync.planning.operations import PHASE_ORDER
    from identity_sync_airflow.hooks import BitbucketHook

    if isinstance(batches, dict):
        batches = [b for phase in PHASE_ORDER for b in batches.get(str(phase), [])]
    from identity_sync.loading.breaker import breaker_settings

    store = _store()
    for run_id in sorted({b["run_id"] for b in batches}):
        try:  # never write for a plan that waits for approval or was blocked (invariant 5)
            pipeline.assert_may_apply(store, run_id)
        except pipeline.SafetyGateError as exc:
            raise AirflowFailException(str(exc)) from exc
    client = BitbucketHook().get_conn()
    rules = current_rules()[0]
    notify = rules.users.initial_password == "notify"
    totals = {"done": 0, "already_done": 0, "superseded": 0, "conflicts": 0}
    for batch in batches:
        # The apply tasks of a phase (at most the pool's slots) send as the service account at
        # once: each keeps to its share of Bitbucket's rate-limit bucket, so together they stay
        # under it; a phase of one batch keeps the whole bucket.
        client.share_rate_limit(min(BITBUCKET_POOL_SLOTS, batch.get("batches") or 1))
        result = pipeline.apply(store, client, batch, notify=notify,
                                breaker=breaker_settings(rules))
        result.raise_for_failures(batch["label"])
        totals["done"] += result.done
        totals["already_done"] += result.already_done
        totals["superseded"] += result.superseded
        totals["conflicts"] += result.conflicts
    return totals


def finish_run(sync_run: str) -> dict:
    from identity_sync import pipeline

    summary = pipeline.finish(_store(), sync_run)
    log.info("%s", pipeline.format_summary(summary))
    if summary["status"] == "conflicts":  # applied; collisions reported, not a failure
        log.warning("identity sync %s ended with conflicts: %s", sync_run, summary["message"])
    if summary["status"] in ("failed", "blocked"):
        streak = failed_streak(get_current_context()["dag"].dag_id, sync_run)
        again = f" ({streak} failed runs in a row)" if streak > 1 else ""
        raise AirflowFailException(f"sync {summary['status']}{again}: {summary['message']}")
    return summary


def prepare_run(*, users: list[str], groups: list[str], dry_run: bool) -> dict:
    """Every stage up to the plan in one task: what a latency-bound run (on login) wants."""
    from identity_sync.audit.store import utcnow

    sync_run = start_run(mode="user" if users and not groups else "subset", dry_run=dry_run)
    counts = extract(sync_run, users, groups)
    if users and not groups and counts["users"] == 0:
        message = (f"{', '.join(users)}: not found in the IDCS scope (unknown userName, or not "
                   "granted the Bitbucket app); nothing synced")
        _store().update_run(sync_run, status="failed", message=message, ended_at=utcnow())
        raise AirflowFailException(message)
    check_quality(sync_run)
    map_desired(sync_run)
    read_bitbucket(sync_run)
    return {"sync_run": sync_run, **plan(sync_run, dry_run=dry_run)}
