"""The sync, stage by stage, as plain functions over the audit store.

Each stage reads its input from the audit store and writes its output there, and returns only
small summaries: this is what lets the DAG hand XCom nothing but counts and batch descriptors, and
lets the same code run in a test, the demo, a benchmark or a Celery worker.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from . import convergence
from .audit import history
from .audit.store import AuditStore, utcnow
from .bitbucket.client import BitbucketClient
from .bitbucket.state import read_state
from .idcs.client import IdcsClient
from .idcs.extract import extract_full
from .loading.apply import (
    READ_ONLY_USERS,
    SETTLED_STATUSES,
    BatchResult,
    apply_batch,
    close_unfinished,
    read_only_users,
    undone_operations,
)
from .loading.breaker import BreakerSettings
from .mapping.rules import SyncRules
from .mapping.transform import build_desired_state, map_group_names
from .model import BitbucketState, DesiredState, IdcsGroup, IdcsSnapshot, key
from .planning.lanes import annotate, names_to_ids
from .planning.operations import (
    PHASE_ORDER,
    Operation,
    OpKind,
    assign_batches,
    batch_refs,
)
from .planning.planner import Plan, PlanInput, plan_changes
from .subset import (
    Subset,
    extract_changed,
    extract_subset,
    read_subset_state,
    restrict_anchors,
)

log = logging.getLogger(__name__)

SNAPSHOT, DESIRED, CURRENT = "idcs_snapshot", "desired_state", "bitbucket_state"
SUBSET = "subset"
PREVIOUSLY_MANAGED = "previously_managed_groups"
DESIRED_UNCHECKED, QUALITY_CHECKED = "desired_state_unchecked", "quality_checked"
WATERMARK_OVERLAP = timedelta(minutes=5)
UNDONE = re.compile(r"\d+ operations not done")  # finish's own failure message
CONFLICT = "conflict:"  # quarantine expectation of a plan-time conflict: "conflict:<kind>"
FIRST_FAILURE = re.compile(r" \(first failure: (.*)\)$", re.DOTALL)
PLAN_PREVIEW = 10  # operations shown in the task log; the full plan is in the audit store


class SafetyGateError(RuntimeError):
    """The plan is recorded but must not run without an explicit approval (invariant 5)."""


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    subset: bool = False  # part of the organisation: size-based guards do not apply


def start(store: AuditStore, run_id: str, *, dag_id: str, trigger: str, mode: str,
          dry_run: bool, rules_hash: str, rules_version: str | None = None) -> None:
    store.start_run(run_id, dag_id=dag_id, trigger=trigger, mode=mode, dry_run=dry_run,
                    rules_hash=rules_hash, rules_version=rules_version)


def resolve_mode(store: AuditStore, run_id: str, requested: str,
                 full_every: timedelta) -> tuple[str, str | None]:
    """``full`` or ``incremental`` (with the watermark to extract from) for this run.

    ``auto`` is incremental after a successful run, but full when no successful full run
    happened within ``full_every`` (the reconciliation that also repairs drift made by hand in
    Bitbucket and catches membership changes IDCS does not date)."""
    if requested == "full":
        return "full", None
    run = store.get_run(run_id)
    if run is None:
        return "full", None
    last_full = history.last_successful_run(store, run["dag_id"], mode="full",
                                            exclude_run=run_id)
    if last_full is None:
        return "full", None
    if requested == "auto" and utcnow() - _aware(last_full["started_at"]) > full_every:
        return "full", None
    newest = history.last_successful_run(store, run["dag_id"], mode=None,
                                         exclude_run=run_id) or last_full
    # From when the newest run's extract began (its start, for rows older than data_as_of),
    # overlapped so a change made while that run extracted is not missed.
    since = _aware(newest["data_as_of"] or newest["started_at"]) - WATERMARK_OVERLAP
    return "incremental", since.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def extract(store: AuditStore, run_id: str, client: IdcsClient, rules: SyncRules,
            app_id: str | None, subset: Subset | None = None,
            since: str | None = None) -> dict[str, int]:
    """Extract the whole scope, a subset, or (with ``since``) the users changed since then;
    store the snapshot, the user ids seen and what the extract cost."""
    # The data's age: IDCS is read from now on (a retried extract starts the clock again).
    store.update_run(run_id, data_as_of=utcnow())
    client.reset_metrics()
    scope, extra = rules.scope, rules.extra_user_attributes()
    listing = listing_key(rules)
    if since is not None:
        known = store.known_user_ids(listing, exclude_run=run_id)
        changes = extract_changed(client, since, store.anchors(), mode=scope.mode,
                                  app_id=app_id, scim_filter=scope.filter,
                                  extra_attributes=extra, known_ids=known[1] if known else None)
        subset, part = changes.subset, changes.extract
        store.update_run(run_id, mode="incremental")
        store.record_user_ids(run_id, changes.changed_ids, changes.deleted_ids)
        record = {"mode": "incremental", "since": since, "app_id": changes.app_id,
                  "deleted": len(changes.deleted_ids), "users_seen": changes.users_total}
    elif subset:
        part = extract_subset(client, subset, mode=scope.mode, app_id=app_id,
                              scim_filter=scope.filter, extra_attributes=extra)
        store.record_user_ids(run_id, [u.id for u in part.snapshot.users if u.id])
        record = {"mode": "subset", "users_seen": len(part.snapshot.users)}
    if since is not None or subset:
        assert subset is not None
        store.put_artifact(run_id, SUBSET, {**subset.to_dict(),
                                            "missing_users": part.missing_users}, 1)
        store.put_artifact(run_id, SNAPSHOT, part.snapshot.to_dict(), len(part.snapshot.users))
        metrics = _record_extract(store, run_id, client, part.snapshot, listing=listing,
                                  membership_strategy="user_side", **record)
        counts = {"users": len(part.snapshot.users), "groups": len(part.snapshot.groups),
                  "missing_users": len(part.missing_users), **metrics}
        merge_counts(store, run_id, extract=counts)
        return counts
    result = extract_full(client, mode=scope.mode, app_id=app_id,
                          include_inactive=scope.include_inactive, scim_filter=scope.filter,
                          extra_attributes=extra, membership=scope.memberships,
                          wanted_groups=lambda groups: groups_rules_read(groups, rules))
    snapshot = result.snapshot
    known = store.known_user_ids(listing, exclude_run=run_id)
    deleted = sorted(known[1] - set(result.user_ids)) if known else []
    store.put_artifact(run_id, SNAPSHOT, snapshot.to_dict(), len(snapshot.users))
    store.record_user_ids(run_id, result.user_ids)
    metrics = _record_extract(store, run_id, client, snapshot, mode="full", listing=listing,
                              app_id=result.app_id, deleted=len(deleted),
                              users_seen=snapshot.total_users_seen,
                              membership_strategy=result.memberships.strategy)
    counts = {"users": len(snapshot.users), "groups": len(snapshot.groups),
              "users_seen": snapshot.total_users_seen, **metrics}
    # The users in scope are the next full run's shrink baseline: a column, set with the counts.
    store.merge_run_counts(run_id, {"extract": counts}, users_in_scope=len(snapshot.users))
    return counts


def listing_key(rules: SyncRules) -> str:
    """The base user listing a scope reads: deletion baselines are only comparable within one."""
    return f"filter:{rules.scope.filter}" if rules.scope.mode == "filter" else "all"


def groups_rules_read(groups: list[IdcsGroup], rules: SyncRules) -> list[str]:
    """Ids of the IDCS groups whose members the rules use: mapped groups and the groups named
    in the scope's ``member_of`` conditions (what per-group member reads must cover)."""
    named = {n.casefold() for flt in (rules.scope.include, rules.scope.exclude)
             for n in flt.member_of}
    mapped = map_group_names(groups, rules)
    return [g.id for g in groups if g.id in mapped or g.display_name.casefold() in named]


def _record_extract(store: AuditStore, run_id: str, client: IdcsClient, snapshot: IdcsSnapshot,
                    **fields: Any) -> dict[str, Any]:
    """Store the extract's totals and per-endpoint metrics; return the totals for the run's
    counts (and the task log)."""
    metrics = client.metrics.snapshot()
    summary = {"scope": snapshot.scope, "users_in_scope": len(snapshot.users),
               "groups": len(snapshot.groups), "deleted": 0,
               "memberships": sum(len(u.group_ids) for u in snapshot.users),
               **{k: metrics[k] for k in ("requests", "pages", "bytes", "retries", "throttled",
                                          "errors", "seconds", "waited_seconds")}, **fields}
    store.record_extract(run_id, summary, metrics["endpoints"])
    log.info("IDCS extract cost: %s", client.metrics.describe())
    return {k: metrics[k] for k in ("requests", "pages", "bytes", "retries", "throttled",
                                    "seconds")}


def merge_counts(store: AuditStore, run_id: str, **sections: Any) -> None:
    """Replace these sections of the run's ``counts`` (shown in the UI; nothing that decides a
    later run reads them) in one transaction, so concurrent callers lose none."""
    store.merge_run_counts(run_id, sections)


def check_quality(store: AuditStore, run_id: str) -> dict[str, Any]:
    """Run the users, groups and memberships suites on the extract; record results and
    quarantine; raise CriticalDataQualityError (run marked failed) on a critical failure."""
    from .quality.baseline import previous_users
    from .quality.checks import check_snapshot

    snapshot = IdcsSnapshot.from_dict(store.get_artifact(run_id, SNAPSHOT))
    partial = run_subset(store, run_id) is not None
    if partial and not snapshot.users:
        return _nothing_to_check("the extract")
    previous = None if partial else previous_users(store, run_id)
    if previous is not None:
        log.info("data quality: comparing with %d users of run %s", *previous)
    results = check_snapshot(snapshot, previous[0] if previous else None)
    return _record_quality(store, run_id, results)


def check_desired_quality(store: AuditStore, run_id: str, rules: SyncRules) -> dict[str, Any]:
    """Run the desired-state suites after :func:`map_desired` (the mapping task calls both):
    quarantined users and group names are removed from the ``desired_state`` artifact, so they
    never reach the planner. Safe to repeat: it always checks the mapping's own output."""
    from .quality.checks import check_desired

    data = store.get_artifact(run_id, DESIRED)
    if not data["users"] and run_subset(store, run_id) is not None:
        return {**_nothing_to_check("the mapped state"), "users": 0}
    if data.get(QUALITY_CHECKED):  # a retry: check what mapping produced, not our filtered copy
        data = store.get_artifact(run_id, DESIRED_UNCHECKED)
    else:
        store.put_artifact(run_id, DESIRED_UNCHECKED, data, len(data["users"]))
    snapshot = IdcsSnapshot.from_dict(store.get_artifact(run_id, SNAPSHOT))
    results, desired = check_desired(DesiredState.from_dict(data), snapshot, rules)
    summary = _record_quality(store, run_id, results)
    store.put_artifact(run_id, DESIRED, {**desired.to_dict(), QUALITY_CHECKED: True},
                       len(desired.users))
    return {**summary, "users": len(desired.users)}


def _nothing_to_check(what: str) -> dict[str, Any]:
    """A partial run (incremental, subset) with no user: empty is expected, not a broken feed."""
    log.info("data quality: %s of this partial run holds no user; nothing to check", what)
    return {"skipped": "no user in this partial run"}


def _record_quality(store: AuditStore, run_id: str, results: list[Any]) -> dict[str, Any]:
    """Store outcomes and quarantine, write Data Docs if asked, stop on a critical failure."""
    from .quality.checks import stop_message
    from .quality.docs import write_data_docs
    from .quality.gate import CriticalDataQualityError

    for result in results:
        store.record_dq(run_id, result.rows_for_audit())
        store.record_quarantine(run_id, result.quarantined)
        write_data_docs(run_id, result.suite, result.validation)
    message = stop_message(results)
    if message:
        store.update_run(run_id, status="failed", message=message, ended_at=utcnow())
        raise CriticalDataQualityError(message)
    outcomes = [o for r in results for o in r.outcomes]
    return {"expectations": len(outcomes), "failed": sum(not o.success for o in outcomes),
            "quarantined": sum(len(r.quarantined) for r in results)}


def map_desired(store: AuditStore, run_id: str, rules: SyncRules) -> dict[str, int]:
    snapshot = IdcsSnapshot.from_dict(store.get_artifact(run_id, SNAPSHOT))
    quarantined = {q["record_id"] for q in store.quarantined(run_id) if q["record_type"] == "user"}
    snapshot.users = [u for u in snapshot.users if u.id not in quarantined and u.id is not None]
    result = build_desired_state(snapshot, rules, store.anchors())
    store.record_quarantine(run_id, [
        {"record_type": "user", "record_id": r["id"], "reason": r["reason"],
         "expectation": "mapping rules", "value": None} for r in result.rejected])
    desired = result.desired
    store.put_artifact(run_id, DESIRED, desired.to_dict(), len(desired.users))
    previously = previously_managed_groups(store, run_id, rules)
    store.put_artifact(run_id, PREVIOUSLY_MANAGED, previously, len(previously))
    log.info("mapping: %d users, %d managed groups, %d memberships wanted; %d users rejected",
             len(desired.users), len(desired.managed_groups),
             sum(len(m) for m in desired.memberships.values()), len(result.rejected))
    return {"users": len(desired.users), "groups": len(desired.managed_groups),
            "memberships": sum(len(m) for m in desired.memberships.values()),
            "rejected": len(result.rejected)}


def previously_managed_groups(store: AuditStore, run_id: str, rules: SyncRules) -> list[str]:
    """With ``groups.delete_removed``: the groups the last successful full run managed, which
    this run deletes if the rules stopped producing them (their members are read, so the safety
    gate weighs a deletion by the people it affects)."""
    previous = last_successful_run(store, run_id)
    if previous is None or not rules.groups.delete_removed:
        return []
    try:
        return DesiredState.from_dict(
            store.get_artifact(previous["run_id"], DESIRED)).groups_to_read()
    except KeyError:  # pruned by retention
        return []


def run_previously_managed(store: AuditStore, run_id: str) -> list[str]:
    try:
        return list(store.get_artifact(run_id, PREVIOUSLY_MANAGED))
    except KeyError:  # mapped before this artifact existed
        return []


def run_subset(store: AuditStore, run_id: str) -> Subset | None:
    """The subset a run was asked to sync, or None for the whole organisation."""
    try:
        spec = store.get_artifact(run_id, SUBSET)
    except KeyError:
        return None
    return Subset(tuple(spec["users"]), tuple(spec["groups"]))


def read_bitbucket(store: AuditStore, run_id: str, client: BitbucketClient) -> dict[str, int]:
    desired = DesiredState.from_dict(store.get_artifact(run_id, DESIRED))
    subset = run_subset(store, run_id)
    anchors = store.anchors()
    if subset is not None:
        snapshot = IdcsSnapshot.from_dict(store.get_artifact(run_id, SNAPSHOT))
        anchors = restrict_anchors(anchors, snapshot, subset)
    groups = desired.groups_to_read()
    if subset is None:  # only a run over the whole organisation deletes groups
        groups += [g for g in run_previously_managed(store, run_id) if g not in groups]
    if not (store.get_run(run_id) or {}).get("dry_run"):
        # Before reading: from here on no older run writes these identities (invariant 3).
        convergence.take_identities(store, run_id, convergence.run_identities(
            desired, anchors, groups if subset is None else []))
    if subset is not None:
        names = sorted({*(u.name for u in desired.users.values()), *anchors.values(),
                        *subset.users}, key=str.casefold)
        state = read_subset_state(client, names, groups)
    else:
        state = read_state(client, groups)
    payload = state.to_dict()
    store.put_artifact(run_id, CURRENT, payload, len(state.users))
    read_only = read_only_users(payload["users"])
    store.put_artifact(run_id, READ_ONLY_USERS, read_only, len(read_only))
    return {"users": len(state.users), "groups": len(state.groups),
            "requests": client.requests_made}


def last_successful_run(store: AuditStore, run_id: str, mode: str = "full"
                        ) -> dict[str, Any] | None:
    """The newest other run of the same DAG in ``mode`` that applied successfully (not a dry
    run; :func:`.audit.history.last_successful_run`), with ``users_in_scope`` filled: the
    baseline a shrinking extract is compared with."""
    run = store.get_run(run_id)
    if run is None:
        return None
    return history.last_successful_run(store, run["dag_id"], mode=mode, exclude_run=run_id)


def held_groups(quarantined: list[dict[str, Any]], snapshot: dict[str, Any],
                rules: SyncRules) -> list[str]:
    """Bitbucket names of the groups quarantined this run (rows of ``record_type`` "group",
    keyed by IDCS group id, or ``row-<n>:<displayName>`` for a group without one): held, so the
    planner neither deletes, empties nor fills them."""
    ids = {q["record_id"] for q in quarantined if q["record_type"] == "group"}
    if not ids:
        return []
    groups = [IdcsGroup(**g) for g in snapshot["groups"] if g.get("id") in ids]
    groups += [IdcsGroup(i, i.partition(":")[2]) for i in ids
               if i.startswith("row-") and ":" in i]
    return sorted(set(map_group_names(groups, rules).values()), key=str.casefold)


def plan(store: AuditStore, run_id: str, rules: SyncRules, service_account: str,
         options: RunOptions) -> dict[str, Any]:
    """Plan, record the plan, then apply the safety gates. Returns ``{"batches": {phase:
    [batch descriptors]}, "approval": {...}}`` (see :func:`_plan_outcome`); no batches for a
    dry run or a run blocked at once."""
    desired = DesiredState.from_dict(store.get_artifact(run_id, DESIRED))
    current = BitbucketState.from_dict(store.get_artifact(run_id, CURRENT))
    snapshot = store.get_artifact(run_id, SNAPSHOT)
    previous = last_successful_run(store, run_id)
    previously_managed = run_previously_managed(store, run_id)
    anchors = all_anchors = store.anchors()
    subset = run_subset(store, run_id)
    if subset is not None:
        anchors = restrict_anchors(anchors, IdcsSnapshot.from_dict(snapshot), subset)
        options = replace(options, subset=True)
    # Quarantined users and groups are held, not synced: never deprovision or strip a user,
    # nor delete, empty or fill a group, because one of their IDCS records was bad this run.
    quarantined = store.quarantined(run_id)
    held = [anchors[q["record_id"]] for q in quarantined
            if q["record_type"] == "user" and q["record_id"] in anchors]
    # Ownership (invariant 4): the groups the sync created, of those this plan could touch.
    touchable = [*desired.groups_to_read(), *desired.initial_groups, *previously_managed]
    owned = store.owned_groups([*touchable, *(current.groups[key(g)] for g in touchable
                                              if key(g) in current.groups)])
    result = plan_changes(PlanInput(
        desired, current, anchors, deprovision=rules.users.deprovision,
        protected_users=[service_account, *rules.users.protected, *held],
        members_per_request=rules.apply.members_per_request, adopt=rules.users.adopt,
        protected_groups=rules.groups.protected, previously_managed_groups=previously_managed,
        delete_removed_groups=rules.groups.delete_removed,
        owned_groups=list(owned.values()), named_groups=rules.groups.named_groups(),
        privileged_allow_groups=rules.groups.allow_privileged,
        privileged_allow_users=rules.users.allow_privileged,
        held_groups=held_groups(quarantined, snapshot, rules),
    ))
    ops = result.operations
    annotate(ops, names_to_ids(all_anchors, result.anchors))
    assign_batches(ops, rules.apply.batch_size, rules.apply.max_batches)
    # Planning the same run again (a cleared run): what the new plan no longer needs is
    # superseded by it, so only the new plan's operations are applied.
    new_ids = {op.op_id for op in ops}
    store.mark_operations(run_id, [o["op_id"] for o in store.plan(run_id) if o["op_id"] not in
                                   new_ids and o["status"] not in ("done", "superseded", "conflict")],
                          "superseded")
    store.record_plan(run_id, ops)
    if not options.dry_run:
        convergence.hand_over(store, run_id, ops)
    # Conflicts (invariant 4: a collision is reported, never a takeover) are quarantine rows
    # whose expectation is "conflict:<kind>"; finish() ends such a run "conflicts".
    store.record_quarantine(run_id, [
        {"record_type": c["record_type"], "record_id": c["id"], "reason": c["reason"],
         "expectation": f"{CONFLICT}{c['kind']}", "value": None} for c in result.conflicts])
    counts = result.counts()
    log.info("%s", describe_plan(run_id, ops, conflicts=result.conflict_counts()))
    for conflict in result.conflicts:
        log.warning("conflict %s, not synced (%s %s): %s", conflict["kind"],
                    conflict["record_type"], conflict["id"], conflict["reason"])

    reason = safety_gate(rules, result, len(all_anchors), snapshot, previous, options)
    merge_counts(store, run_id, planned=counts, conflicts=result.conflict_counts())
    return _plan_outcome(store, run_id, rules, result, current, reason, options)


def _plan_outcome(store: AuditStore, run_id: str, rules: SyncRules, result: Plan,
                  current: BitbucketState, reason: str | None, options: RunOptions
                  ) -> dict[str, Any]:
    """Set the run's status from the safety gate and return what the DAG passes on:
    ``{"batches": {phase: [...]}, "approval": {"needed", "reason", "summary", "approvers",
    "timeout_hours"}}``. A tripped gate does not raise: the run waits (``awaiting_approval``,
    message = the reason) for a named approver, or ends ``blocked`` at once when the rules name
    none. A dry run always stops after the plan."""
    safety = rules.safety
    none: dict[str, list[dict[str, Any]]] = {str(p): [] for p in PHASE_ORDER}
    approval: dict[str, Any] = {
        "needed": False, "reason": reason,
        "summary": approval_summary(run_id, reason, result, current) if reason else "",
        "approvers": list(safety.approvers), "timeout_hours": safety.approval_timeout_hours}
    if options.dry_run:
        message = "dry run: plan recorded, not applied" + (
            f"; a real run would need approval: {reason}" if reason else "")
        store.update_run(run_id, status="dry_run", message=message, ended_at=utcnow())
        return {"batches": none, "approval": approval}
    if reason is None:
        store.update_run(run_id, status="planned", message=None)
        return {"batches": batch_refs(run_id, result.operations), "approval": approval}
    approval["needed"] = True
    if not safety.approvers:
        message = (f"{reason}; nobody can approve it: name Airflow user ids in "
                   "safety.approvers of the rules")
        store.update_run(run_id, status="blocked", message=message, ended_at=utcnow())
        log.warning("safety gate: %s", message)
        return {"batches": none, "approval": {**approval, "reason": message}}
    store.update_run(run_id, status="awaiting_approval", message=reason)
    log.warning("safety gate: %s; waiting up to %s for approval by %s", reason,
                format_hours(safety.approval_timeout_hours), ", ".join(safety.approvers))
    return {"batches": batch_refs(run_id, result.operations), "approval": approval}


def describe_plan(run_id: str, ops: list[Operation], per_kind: int = PLAN_PREVIEW,
                  conflicts: dict[str, int] | None = None) -> str:
    """Counts by kind and the first few operations of each kind, for the task log; then the
    conflicts by kind (collisions reported instead of taken over)."""
    reported = ""
    if conflicts:
        reported = "\n  conflicts (not synced, see the quarantine): " + ", ".join(
            f"{kind} × {n}" for kind, n in sorted(conflicts.items()))
    if not ops:
        return f"plan for {run_id}: 0 operations (nothing to change){reported}"
    by_kind: dict[str, list[Operation]] = {}
    for op in ops:
        by_kind.setdefault(op.kind.value, []).append(op)
    lines = [f"plan for {run_id}: {len(ops)} operations"]
    for kind, kind_ops in by_kind.items():
        lines.append(f"  {kind} × {len(kind_ops)}")
        lines += [f"    {op.describe():<40} {op.reason}" for op in kind_ops[:per_kind]]
        if len(kind_ops) > per_kind:
            lines.append(f"    ... and {len(kind_ops) - per_kind} more")
    lines.append("  (every operation is in the audit store, table plan_operations)")
    return "\n".join(lines) + reported


def safety_gate(rules: SyncRules, result: Plan, managed_users: int,
                snapshot: dict[str, Any], previous: dict[str, Any] | None,
                options: RunOptions) -> str | None:
    """A one-line reason the plan needs a named approver before it writes, or None (design
    invariant 5). ``managed_users``: the anchored users; ``previous``: the last successful full
    run (the baseline), or None."""
    safety = rules.safety
    users_seen = snapshot["total_users_seen"]
    if not options.subset and users_seen < safety.min_users:
        return (f"IDCS returned {users_seen} users (minimum {safety.min_users}): refusing to sync "
                "from what looks like a partial or empty extract")
    weight, parts = access_losses(result)
    now = len(snapshot["users"])
    if not options.subset:
        before = history.users_in_scope(previous) if previous else None
        if before and now < before:
            shrink = 100.0 * (before - now) / before
            if shrink > safety.max_shrink_percent:
                return (f"the IDCS extract shrank from {before} to {now} users in scope "
                        f"({shrink:.1f}%, limit {safety.max_shrink_percent}%) since the last "
                        "successful run: check IDCS before approving")
        elif previous is None and managed_users and weight:
            # Fail closed: without a baseline the shrink check cannot vouch for this extract.
            return (f"no baseline run found although {managed_users} users are managed: no "
                    f"successful full run to compare this extract ({now} users in scope) with, "
                    f"and the plan takes access from {weight} users ({', '.join(parts)})")
    if not weight:
        return None
    percent = 100.0 * weight / max(managed_users, 1)
    if weight > safety.max_deprovision or percent > safety.max_deprovision_percent:
        return (f"plan takes access from {weight} users ({percent:.1f}% of {managed_users} "
                f"managed users: {', '.join(parts)}), above the limit of "
                f"{safety.max_deprovision} / {safety.max_deprovision_percent}%")
    return None


def access_losses(result: Plan) -> tuple[int, list[str]]:
    """What the safety gate counts: users deprovisioned, losing a licence or removed from a
    permission-granting group (each user once), plus every deleted group weighted by its
    members; and the parts, for the reason."""
    deprovisioned = {key(n) for n in result.deprovisioned}
    unlicensed = {key(n) for n in result.licence_losses} - deprovisioned
    removed = {key(n) for n in result.permission_removals} - deprovisioned - unlicensed
    deleted = result.deleted_groups
    members = sum(deleted.values())
    parts = [f"{n} {what}" for n, what in (
        (len(deprovisioned), "deprovisioned"), (len(unlicensed), "unlicensed"),
        (len(removed), "removed from permission-granting groups"),
        (members, f"members of {len(deleted)} deleted group{'s' * (len(deleted) != 1)}"),
    ) if n]
    return len(deprovisioned) + len(unlicensed) + len(removed) + members, parts


RISKY_PREVIEW = 10  # operations of each risky kind shown to the approver


def approval_summary(run_id: str, reason: str, result: Plan, current: BitbucketState,
                     per_kind: int = RISKY_PREVIEW) -> str:
    """What an approver reads (Markdown): the reason, counts by kind, and the first operations
    of each kind that takes access away."""
    ops = result.operations
    permission_groups = {key(g) for g in current.group_permissions}
    risky: dict[str, list[Operation]] = {
        "Deprovisions": [o for o in ops if o.kind in (OpKind.DISABLE_USER, OpKind.DELETE_USER)],
        "Group deletions": [o for o in ops if o.kind is OpKind.DELETE_GROUP],
        "Removals from permission-granting groups": [
            o for o in ops if o.kind is OpKind.REVOKE_USER_PERMISSION or (
                o.kind is OpKind.REMOVE_MEMBERSHIP
                and key(o.params["group"]) in permission_groups)],
    }
    deleted = result.deleted_groups
    losses = result.licence_losses
    lines = [f"**Why this needs approval:** {reason}", "",
             f"Run `{run_id}` plans {len(ops)} operations:", ""]
    lines += [f"- {kind}: {n}" for kind, n in sorted(result.counts().items())]
    if losses:
        shown = ", ".join(losses[:per_kind])
        lines += ["", f"**Licence losses** ({len(losses)}): {shown}"
                  + (f" … and {len(losses) - per_kind} more" if len(losses) > per_kind else "")]
    for title, kind_ops in risky.items():
        if not kind_ops:
            continue
        lines += ["", f"**{title}** ({len(kind_ops)}):"]
        for op in kind_ops[:per_kind]:
            members = deleted.get(op.target, (op.before or {}).get("members"))
            extra = f" ({members} members)" if op.kind is OpKind.DELETE_GROUP else ""
            lines.append(f"- {op.describe()}{extra}: {op.reason}")
        if len(kind_ops) > per_kind:
            lines.append(f"- … and {len(kind_ops) - per_kind} more")
    lines += ["", "Every operation is in the audit store (table `plan_operations`, this run id). "
              "**Approve** applies exactly this plan; **Reject** ends the run blocked, nothing "
              "written."]
    return "\n".join(lines)


def format_hours(hours: float) -> str:
    """``24h``, ``30min``, ``7s``: an approval timeout as people say it."""
    seconds = hours * 3600
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(hours)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}min"
    return f"{seconds:.0f}s" if seconds < 60 else f"{seconds / 60:.1f}min"


def approve_run(store: AuditStore, run_id: str, approver: str) -> None:
    """An approver said yes: record who, and let the plan apply (status back to ``planned``)."""
    run = store.get_run(run_id) or {}
    if run.get("status") != "awaiting_approval":
        raise SafetyGateError(f"run {run_id} is {run.get('status')}, not awaiting approval")
    store.update_run(run_id, status="planned", approved_by=approver, message=None)
    log.warning("plan of %s approved by %s (gate: %s)", run_id, approver, run.get("message"))


def block_run(store: AuditStore, run_id: str, reason: str) -> None:
    """End a run that waited for approval as ``blocked`` (rejected, timed out): nothing written."""
    store.update_run(run_id, status="blocked", message=reason, ended_at=utcnow())
    log.warning("run %s blocked: %s", run_id, reason)


def assert_may_apply(store: AuditStore, run_id: str) -> None:
    """Refuse to write for a run whose plan waits for approval or was blocked."""
    run = store.get_run(run_id) or {}
    if run.get("status") in ("awaiting_approval", "blocked"):
        raise SafetyGateError(f"run {run_id} is {run['status']}, nothing may be applied: "
                              f"{run.get('message')}")


def apply(store: AuditStore, client: BitbucketClient, batch: dict[str, Any], *,
          notify: bool = False, breaker: BreakerSettings | None = None) -> BatchResult:
    """Apply one batch; operations on identities a newer run holds are left to it."""
    run_id = batch["run_id"]
    store.update_run(run_id, status="applying")
    return apply_batch(store, client, run_id, batch["phase"], batch["batch"], notify=notify,
                       breaker=breaker)


def finish(store: AuditStore, run_id: str) -> dict[str, Any]:
    """Close the run: final status and counts from the operations' own statuses."""
    run = store.get_run(run_id) or {}
    if run.get("status") in ("planned", "applying"):
        close_unfinished(store, run_id)  # every operation ends the run with a final status
    by_kind = store.operation_status_counts(run_id)
    # Not done: failed, never attempted, or left in flight ("started") by a killed worker.
    # A conflict is final and no failure: an object the sync cannot prove its own, reported.
    failed = sum(n for s in by_kind.values() for status, n in s.items()
                 if status not in SETTLED_STATUSES)
    superseded = sum(s.get("superseded", 0) for s in by_kind.values())
    quarantined = store.quarantined(run_id)
    conflicts = (any(s.get("conflict") for s in by_kind.values())
                 or any(_is_conflict(q) for q in quarantined))
    status = run.get("status", "running")
    message = run.get("message")
    if status in ("running", "blocked", "awaiting_approval"):
        # It took its identities but will never write them (stopped before planning, or its
        # plan was refused): older runs' plans for them may land again.
        convergence.release_identities(store, run_id)
    if status == "running":  # never planned: a stage before the plan failed
        status = "failed"
        message = message or f"stopped in {_stopped_stage(store, run_id)} before planning; " \
                             "nothing was written to Bitbucket (see that task's log)"
    elif status == "awaiting_approval":  # the approval task ended without recording an answer
        status, message = "blocked", f"not approved: {message}"
    elif status in ("planned", "applying"):
        status = "failed" if failed else ("conflicts" if conflicts else (
            "superseded" if superseded else "succeeded"))
        if status == "conflicts":
            message = conflicts_message(conflicts_of(store.plan(run_id), quarantined))
        elif status == "failed":  # name what is undone; keep the first task failure's reason
            first = message if message and not UNDONE.match(message) else (
                found.group(1) if message and (found := FIRST_FAILURE.search(message)) else None)
            message = f"{undone_operations(store, run_id)}; clear the failed tasks to retry " \
                      f"them{f' (first failure: {first})' if first else ''}"
        elif status == "succeeded":
            message = None  # a cleared, completed run no longer carries its failure
    if status == "failed" and not message:
        message = f"{failed} operations not done; clear the failed tasks to retry them"
    store.merge_run_counts(run_id, {"operations": by_kind, "quarantined": len(quarantined)},
                           status=status, message=message, ended_at=utcnow())
    return summarise(store, run_id)


def _is_conflict(quarantined: dict[str, Any]) -> bool:
    return (quarantined["expectation"] or "").startswith(CONFLICT)


def conflicts_of(plan: list[dict[str, Any]], quarantined: list[dict[str, Any]]) -> list[str]:
    """A run's conflicts, named, from its plan rows and quarantine rows: operations the apply
    ended ``conflict`` and the conflicts the plan reported (expectation ``conflict:<kind>``)."""
    named = [f"{row['kind'].replace('_', ' ')} {row['target']} (exists, not the sync's)"
             for row in plan if row["status"] == "conflict"]
    named += [f"{q['record_type']} {q['record_id']} ({q['expectation'][len(CONFLICT):]})"
              for q in sorted(quarantined, key=lambda q: (q["record_type"], q["record_id"]))
              if _is_conflict(q)]
    return named


def conflicts_message(conflicts: list[str], limit: int = 5) -> str:
    """One line naming the first conflicts and how many there are."""
    more = f" and {len(conflicts) - limit} more" if len(conflicts) > limit else ""
    return (f"{len(conflicts)} conflicts, not synced (reported, never taken over): "
            f"{', '.join(conflicts[:limit])}{more}; see the quarantine and the README's "
            "\"Ownership and conflicts\"")


def _stopped_stage(store: AuditStore, run_id: str) -> str:
    """The first stage whose output is missing from the audit store."""
    for artifact, stage in ((SNAPSHOT, "extract_idcs"), (DESIRED, "map_to_bitbucket"),
                            (CURRENT, "read_bitbucket")):
        try:
            store.get_artifact(run_id, artifact)
        except KeyError:
            if stage == "map_to_bitbucket" and not store.dq(run_id):
                return "check_data_quality"
            return stage
    return "plan_sync"


def summarise(store: AuditStore, run_id: str) -> dict[str, Any]:
    run = store.get_run(run_id) or {}
    by_kind = store.operation_status_counts(run_id)

    def done(kind: str) -> int:
        return by_kind.get(kind, {}).get("done", 0)

    plan = store.plan(run_id)
    quarantined = store.quarantined(run_id)
    memberships_added = sum(len(op["params"]["users"]) for op in plan
                            if op["kind"] == "add_members" and op["status"] == "done")
    disabled = {op["target"] for op in plan if op["status"] == "done"
                and op["kind"] == "disable_user"}
    return {
        "run_id": run_id,
        "mode": run.get("mode"),
        "status": run.get("status"),
        "message": run.get("message"),
        "operations": sum(sum(s.values()) for s in by_kind.values()),
        "users_created": done("create_user"),
        "users_updated": done("update_user") + done("rename_user"),
        "users_adopted": done("adopt_user"),
        "users_reactivated": done("reactivate_user"),
        "users_disabled": len(disabled),
        "users_deleted": done("delete_user"),
        "groups_created": done("create_group"),
        "groups_deleted": done("delete_group"),
        "memberships_added": memberships_added,
        "memberships_removed": done("remove_membership"),
        "failures": sum(s.get("failed", 0) for s in by_kind.values()),
        "conflicts": len(conflicts_of(plan, quarantined)),
        "quarantined": len(quarantined),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The few lines an administrator reads after a run."""
    if summary["operations"] == 0 and summary["status"] == "succeeded":
        headline = "Bitbucket is already in step with IDCS: 0 operations, nothing to change."
    else:
        headline = f"{summary['operations']} operations planned, status {summary['status']}."
    lines = [
        f"Sync run {summary['run_id']} ({summary.get('mode') or 'full'}): {headline}",
        f"  users:       {summary['users_created']} created, {summary['users_updated']} updated, "
        f"{summary['users_adopted']} adopted, {summary['users_reactivated']} reactivated, "
        f"{summary['users_disabled']} disabled, {summary['users_deleted']} deleted",
        f"  groups:      {summary['groups_created']} created, {summary['groups_deleted']} deleted",
        f"  memberships: {summary['memberships_added']} added, "
        f"{summary['memberships_removed']} removed",
        f"  failures:    {summary['failures']}    conflicts: {summary.get('conflicts', 0)}    "
        f"quarantined records: {summary['quarantined']}",
    ]
    if summary.get("message"):
        lines.append(f"  note:        {summary['message']}")
    return "\n".join(lines)
