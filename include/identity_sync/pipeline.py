"""The sync, stage by stage, as plain functions over the audit store.

Each stage reads its input from the audit store and writes its output there, and returns only
small summaries: this is what lets the DAG hand XCom nothing but counts and batch descriptors, and
lets the same code run in a test, the demo, a benchmark or a Celery worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .audit.store import AuditStore, utcnow
from .bitbucket.client import BitbucketClient
from .bitbucket.state import read_state
from .idcs.client import IdcsClient
from .idcs.extract import extract_snapshot
from .loading.apply import BatchResult, apply_batch
from .mapping.rules import SyncRules
from .mapping.transform import build_desired_state
from .model import BitbucketState, DesiredState, IdcsSnapshot
from .planning.operations import PHASE_ORDER, assign_batches, batch_refs
from .planning.planner import PlanInput, plan_changes

log = logging.getLogger(__name__)

SNAPSHOT, DESIRED, CURRENT = "idcs_snapshot", "desired_state", "bitbucket_state"
PLAN_PREVIEW = 10  # operations shown in the task log; the full plan is in the audit store


class SafetyGateError(RuntimeError):
    """The plan is recorded but must not run without an explicit approval (invariant 5)."""


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    approve_deprovisioning: bool = False


def start(store: AuditStore, run_id: str, *, dag_id: str, trigger: str, mode: str,
          dry_run: bool, rules_hash: str) -> None:
    store.start_run(run_id, dag_id=dag_id, trigger=trigger, mode=mode, dry_run=dry_run,
                    rules_hash=rules_hash)


def extract(store: AuditStore, run_id: str, client: IdcsClient, rules: SyncRules,
            app_id: str | None) -> dict[str, int]:
    snapshot = extract_snapshot(client, mode=rules.scope.mode, app_id=app_id,
                                include_inactive=rules.scope.include_inactive)
    store.put_artifact(run_id, SNAPSHOT, snapshot.to_dict(), len(snapshot.users))
    return {"users": len(snapshot.users), "groups": len(snapshot.groups),
            "users_seen": snapshot.total_users_seen, "requests": client.requests_made}


def check_quality(store: AuditStore, run_id: str) -> dict[str, Any]:
    """Run the users suite; record results and quarantine; raise on a critical failure."""
    from .quality.gate import CriticalDataQualityError, check_users

    snapshot = IdcsSnapshot.from_dict(store.get_artifact(run_id, SNAPSHOT))
    result = check_users(snapshot.users)
    store.record_dq(run_id, result.rows_for_audit())
    store.record_quarantine(run_id, result.quarantined)
    failed = result.critical_failures
    if failed:
        reason = "; ".join(f"{o.expectation} ({o.unexpected_count} unexpected)" for o in failed)
        message = f"critical data-quality failure, nothing written to Bitbucket: {reason}"
        store.update_run(run_id, status="failed", message=message, ended_at=utcnow())
        raise CriticalDataQualityError(message)
    return {"expectations": len(result.outcomes),
            "failed": sum(not o.success for o in result.outcomes),
            "quarantined": len(result.quarantined)}


def map_desired(store: AuditStore, run_id: str, rules: SyncRules) -> dict[str, int]:
    snapshot = IdcsSnapshot.from_dict(store.get_artifact(run_id, SNAPSHOT))
    quarantined = {q["record_id"] for q in store.quarantined(run_id) if q["record_type"] == "user"}
    snapshot.users = [u for u in snapshot.users if u.id not in quarantined and u.id is not None]
    result = build_desired_state(snapshot, rules)
    store.record_quarantine(run_id, [
        {"record_type": "user", "record_id": r["id"], "reason": r["reason"],
         "expectation": "mapping rules", "value": None} for r in result.rejected])
    desired = result.desired
    store.put_artifact(run_id, DESIRED, desired.to_dict(), len(desired.users))
    log.info("mapping: %d users, %d managed groups, %d memberships wanted; %d users rejected",
             len(desired.users), len(desired.managed_groups),
             sum(len(m) for m in desired.memberships.values()), len(result.rejected))
    return {"users": len(desired.users), "groups": len(desired.managed_groups),
            "memberships": sum(len(m) for m in desired.memberships.values()),
            "rejected": len(result.rejected)}


def read_bitbucket(store: AuditStore, run_id: str, client: BitbucketClient) -> dict[str, int]:
    desired = DesiredState.from_dict(store.get_artifact(run_id, DESIRED))
    state = read_state(client, desired.managed_groups)
    store.put_artifact(run_id, CURRENT, state.to_dict(), len(state.users))
    return {"users": len(state.users), "groups": len(state.groups),
            "requests": client.requests_made}


def plan(store: AuditStore, run_id: str, rules: SyncRules, service_account: str,
         options: RunOptions) -> dict[str, list[dict[str, Any]]]:
    """Plan, record the plan, then apply the safety gate. Returns batch descriptors per phase
    (empty lists for a dry run)."""
    desired = DesiredState.from_dict(store.get_artifact(run_id, DESIRED))
    current = BitbucketState.from_dict(store.get_artifact(run_id, CURRENT))
    snapshot_rows = store.get_artifact(run_id, SNAPSHOT)["total_users_seen"]
    anchors = store.anchors()
    result = plan_changes(PlanInput(
        desired, current, anchors, deprovision=rules.users.deprovision,
        protected_users=[service_account, *rules.users.protected],
        members_per_request=rules.apply.members_per_request,
    ))
    ops = result.operations
    assign_batches(ops, rules.apply.batch_size, rules.apply.max_batches)
    store.record_plan(run_id, ops)
    counts = result.counts()
    log.info("plan for %s: %d operations %s", run_id, len(ops), counts or "(nothing to change)")
    for op in ops[:PLAN_PREVIEW]:
        log.info("  %-22s %-32s %s", op.kind.value, op.target, op.reason)
    if len(ops) > PLAN_PREVIEW:
        log.info("  ... and %d more (all in the audit store, table plan_operations)",
                 len(ops) - PLAN_PREVIEW)

    blocked = _safety_gate(rules, result.deprovisioned, anchors, snapshot_rows, options)
    status = "blocked" if blocked else ("dry_run" if options.dry_run else "planned")
    store.update_run(run_id, status=status, counts={"planned": counts}, message=blocked)
    if blocked:
        store.update_run(run_id, ended_at=utcnow())
        raise SafetyGateError(blocked)
    if options.dry_run:
        store.update_run(run_id, ended_at=utcnow(), message="dry run: plan recorded, not applied")
        return {str(p): [] for p in PHASE_ORDER}
    return batch_refs(run_id, ops)


def _safety_gate(rules: SyncRules, deprovisioned: list[str], anchors: dict[str, str],
                 users_seen: int, options: RunOptions) -> str | None:
    safety = rules.safety
    if users_seen < safety.min_users:
        return (f"IDCS returned {users_seen} users (minimum {safety.min_users}): refusing to sync "
                "from what looks like a partial or empty extract")
    n = len(deprovisioned)
    if n == 0 or options.approve_deprovisioning:
        return None
    percent = 100.0 * n / max(len(anchors), 1)
    if n > safety.max_deprovision or percent > safety.max_deprovision_percent:
        return (f"plan deprovisions {n} users ({percent:.1f}% of managed users), above the limit "
                f"of {safety.max_deprovision} / {safety.max_deprovision_percent}%: review the plan "
                "and re-run with approve_deprovisioning=true")
    return None


def apply(store: AuditStore, client: BitbucketClient, batch: dict[str, Any], *,
          dag_ids: tuple[str, ...], notify: bool = False) -> BatchResult:
    run_id = batch["run_id"]
    store.update_run(run_id, status="applying")
    newer = store.newer_planned_run(run_id, dag_ids)
    return apply_batch(store, client, run_id, batch["phase"], batch["batch"], notify=notify,
                       superseded_by=newer)


def finish(store: AuditStore, run_id: str) -> dict[str, Any]:
    """Close the run: final status and counts from the operations' own statuses."""
    run = store.get_run(run_id) or {}
    by_kind = store.operation_status_counts(run_id)
    failed = sum(s.get("failed", 0) + s.get("planned", 0) for s in by_kind.values())
    superseded = sum(s.get("superseded", 0) for s in by_kind.values())
    status = run.get("status", "running")
    if status in ("running", "planned", "applying"):
        status = "failed" if failed else ("superseded" if superseded else "succeeded")
    counts = {**(run.get("counts") or {}), "operations": by_kind,
              "quarantined": len(store.quarantined(run_id))}
    message = run.get("message")
    if status == "failed" and not message:
        message = f"{failed} operations not done; clear the failed tasks to retry them"
    store.update_run(run_id, status=status, counts=counts, message=message, ended_at=utcnow())
    return summarise(store, run_id)


def summarise(store: AuditStore, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id) or {}
    by_kind = store.operation_status_counts(run_id)

    def done(kind: str) -> int:
        return by_kind.get(kind, {}).get("done", 0)

    memberships_added = sum(len(op["params"]["users"]) for op in store.plan(run_id)
                            if op["kind"] == "add_members" and op["status"] == "done")
    disabled = {op["target"] for op in store.plan(run_id) if op["status"] == "done"
                and op["reason"].startswith("deprovision (disable)")}
    return {
        "run_id": run_id,
        "status": run.get("status"),
        "message": run.get("message"),
        "operations": sum(sum(s.values()) for s in by_kind.values()),
        "users_created": done("create_user"),
        "users_updated": done("update_user") + done("rename_user"),
        "users_adopted": done("adopt_user"),
        "users_disabled": len(disabled),
        "users_deleted": done("delete_user"),
        "groups_created": done("create_group"),
        "memberships_added": memberships_added,
        "memberships_removed": done("remove_membership"),
        "failures": sum(s.get("failed", 0) for s in by_kind.values()),
        "quarantined": len(store.quarantined(run_id)),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The few lines an administrator reads after a run."""
    if summary["operations"] == 0 and summary["status"] == "succeeded":
        headline = "Bitbucket is already in step with IDCS: 0 operations, nothing to change."
    else:
        headline = f"{summary['operations']} operations planned, status {summary['status']}."
    lines = [
        f"Sync run {summary['run_id']}: {headline}",
        f"  users:       {summary['users_created']} created, {summary['users_updated']} updated, "
        f"{summary['users_adopted']} adopted, {summary['users_disabled']} disabled, "
        f"{summary['users_deleted']} deleted",
        f"  groups:      {summary['groups_created']} created",
        f"  memberships: {summary['memberships_added']} added, "
        f"{summary['memberships_removed']} removed",
        f"  failures:    {summary['failures']}    quarantined records: {summary['quarantined']}",
    ]
    if summary.get("message"):
        lines.append(f"  note:        {summary['message']}")
    return "\n".join(lines)
