"""The safety gate (design invariant 5): each reason, what it counts, failing closed without a
baseline, and what ``pipeline.plan`` returns and records when it trips."""

from __future__ import annotations

from typing import Any

import pytest

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync.mapping.rules import RulesError, parse_rules
from identity_sync.model import DesiredUser, IdcsSnapshot, IdcsUser
from identity_sync.pipeline import RunOptions, access_losses, safety_gate
from identity_sync.planning.operations import Operation, OpKind
from identity_sync.planning.planner import Plan

from .test_planner import bb, desired

RULES = parse_rules("safety: {max_deprovision: 5, max_deprovision_percent: 50, "
                    "max_shrink_percent: 20, min_users: 3}\n")
MANAGED = 100  # anchored users: 5 of them is 5%, under the percent limit
BASELINE = {"run_id": "before", "users_in_scope": 100}


def snapshot(users: int, seen: int | None = None) -> dict[str, Any]:
    return {"total_users_seen": users if seen is None else seen, "users": [{}] * users}


def plan(deprovisioned: int = 0, unlicensed: int = 0, permission_removals: int = 0,
         deleted_groups: dict[str, int] | None = None, ops: list[Operation] | None = None
         ) -> Plan:
    return Plan(ops or [], {}, [f"gone{i}" for i in range(deprovisioned)],
                [f"lic{i}" for i in range(unlicensed)], deleted_groups=deleted_groups or {},
                permission_removals=[f"perm{i}" for i in range(permission_removals)])


def gate(result: Plan, *, users: int = 100, previous: dict[str, Any] | None = BASELINE,
         managed: int = MANAGED, subset: bool = False, seen: int | None = None) -> str | None:
    return safety_gate(RULES, result, managed, snapshot(users, seen), previous,
                       RunOptions(subset=subset))


def test_a_plan_within_the_limits_passes() -> None:
    assert gate(plan(deprovisioned=3, unlicensed=2)) is None


def test_too_few_users_is_a_gate_even_with_nothing_to_remove() -> None:
    reason = gate(plan(), users=2)
    assert reason.startswith("IDCS returned 2 users (minimum 3)")
    assert gate(plan(), users=2, subset=True) is None  # part of the organisation: no minimum


def test_a_shrunken_extract_needs_approval() -> None:
    reason = gate(plan(), users=70)
    assert reason.startswith("the IDCS extract shrank from 100 to 70 users in scope (30.0%")
    assert gate(plan(), users=85) is None


def test_the_shrink_baseline_falls_back_to_the_counts_of_older_rows() -> None:
    previous = {"run_id": "old", "users_in_scope": None, "counts": {"extract": {"users": 200}}}
    assert gate(plan(), users=100, previous=previous).startswith(
        "the IDCS extract shrank from 200 to 100")


def test_deprovisions_and_licence_losses_count_together() -> None:
    reason = gate(plan(deprovisioned=4, unlicensed=2))
    assert reason == ("plan takes access from 6 users (6.0% of 100 managed users: "
                      "4 deprovisioned, 2 unlicensed), above the limit of 5 / 50.0%")


def test_the_percent_limit_applies_to_the_managed_users() -> None:
    assert gate(plan(deprovisioned=3), managed=5).startswith(
        "plan takes access from 3 users (60.0% of 5 managed users")


def test_group_deletions_count_their_members() -> None:
    reason = gate(plan(deprovisioned=1, deleted_groups={"old-team": 3, "empty": 0, "x": 2}))
    assert reason.startswith("plan takes access from 6 users (6.0% of 100 managed users: "
                             "1 deprovisioned, 5 members of 3 deleted groups)")
    assert gate(plan(deleted_groups={"small": 5})) is None


def test_removals_from_permission_granting_groups_count() -> None:
    reason = gate(plan(deprovisioned=2, permission_removals=4))
    assert "2 deprovisioned, 4 removed from permission-granting groups" in reason


def test_a_user_counts_once_whatever_they_lose() -> None:
    result = plan(deprovisioned=3)
    result.licence_losses = ["gone0", "GONE1", "lic"]
    result.permission_removals = ["gone2", "lic", "perm"]
    assert access_losses(result) == (5, ["3 deprovisioned", "1 unlicensed",
                                         "1 removed from permission-granting groups"])


def test_without_a_baseline_a_run_that_takes_access_fails_closed() -> None:
    reason = gate(plan(deprovisioned=1), previous=None)
    assert reason.startswith("no baseline run found although 100 users are managed: no "
                             "successful full run to compare this extract (100 users in scope)")
    assert "\n" not in reason
    assert gate(plan(), previous=None) is None  # nothing taken away: nothing to vouch for
    assert gate(plan(unlicensed=1), previous=None, managed=0).startswith(
        "plan takes access")  # a first sync manages nobody yet: only the limits apply
    assert gate(plan(deprovisioned=1), previous=None, subset=True) is None


def test_rules_name_approvers_and_a_timeout() -> None:
    rules = parse_rules("safety: {approvers: [admin, ' ops '], approval_timeout_hours: 0.5}")
    assert rules.safety.approvers == ["admin", "ops"]
    assert rules.safety.approval_timeout_hours == 0.5
    assert parse_rules("{}").safety.approvers == []
    for bad, field in (("approvers: ['']", "safety.approvers"),
                       ("approvers: [a, a]", "approvers named twice: a"),
                       ("approval_timeout_hours: 0", "safety.approval_timeout_hours")):
        with pytest.raises(RulesError, match=field):
            parse_rules(f"safety: {{{bad}}}")
    assert pipeline.format_hours(24) == "24h"
    assert pipeline.format_hours(0.5) == "30min"
    assert pipeline.format_hours(0.002) == "7s"


# -- pipeline.plan: what a tripped gate records and returns ---------------------------------------
def users(n: int, leaving: int) -> list[DesiredUser]:
    return [DesiredUser(f"u{i}", f"user{i}", "U", f"u{i}@x.io", i >= leaving) for i in range(n)]


@pytest.fixture
def store(tmp_path) -> AuditStore:
    return AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")


def prepared(store: AuditStore, run_id: str, leaving: int, *, dry_run: bool = False) -> None:
    """A run ready to plan: 10 anchored users, ``leaving`` of them deprovisioned, a baseline."""
    people = users(10, leaving)
    for rid in ("baseline", run_id):
        pipeline.start(store, rid, dag_id="idcs_bitbucket_sync", trigger="manual", mode="full",
                       dry_run=dry_run and rid == run_id, rules_hash="t")
    store.update_run("baseline", status="succeeded", users_in_scope=10)
    store.save_anchors("baseline", {u.idcs_id: u.name for u in people})
    store.put_artifact(run_id, pipeline.SNAPSHOT, IdcsSnapshot(
        [IdcsUser(u.idcs_id, u.name, "U", None, None, u.email, u.active) for u in people], [],
        "all", 10).to_dict(), 10)
    names = [u.name for u in people]
    store.put_artifact(run_id, pipeline.DESIRED, desired(
        people, {"devs": names[leaving:]}).to_dict(), 10)
    store.put_artifact(run_id, pipeline.CURRENT, bb(
        [(n, "U", f"u{i}@x.io") for i, n in enumerate(names)], {"devs": names},
        group_permissions={"devs": "LICENSED_USER"}).to_dict(), 10)


# devs is named by the rules, so the sync manages it (design invariant 4).
RULES_TEXT = ("groups: {permissions: {devs: LICENSED_USER}}\n"
              "safety: {max_deprovision: 2, max_deprovision_percent: 50, approvers: %s, "
              "approval_timeout_hours: 2}\n")


def test_a_plan_within_the_limits_is_planned_with_its_batches(store: AuditStore) -> None:
    prepared(store, "r1", leaving=1)
    out = pipeline.plan(store, "r1", parse_rules(RULES_TEXT % "[admin]"), "svc", RunOptions())
    assert out["approval"] == {"needed": False, "reason": None, "summary": "",
                               "approvers": ["admin"], "timeout_hours": 2.0}
    assert sum(len(b) for b in out["batches"].values()) >= 1
    assert store.get_run("r1")["status"] == "planned"
    pipeline.assert_may_apply(store, "r1")


def test_a_tripped_gate_waits_for_approval_with_a_readable_summary(store: AuditStore) -> None:
    prepared(store, "r1", leaving=3)
    out = pipeline.plan(store, "r1", parse_rules(RULES_TEXT % "[admin, ops]"), "svc",
                        RunOptions())
    approval = out["approval"]
    assert approval["needed"] and approval["approvers"] == ["admin", "ops"]
    assert approval["reason"].startswith("plan takes access from 3 users (30.0% of 10 managed")
    summary = approval["summary"]
    assert summary.startswith(f"**Why this needs approval:** {approval['reason']}")
    assert "- disable_user: 3" in summary and "**Deprovisions** (3):" in summary
    assert "**Removals from permission-granting groups** (3):" in summary
    assert "- remove user0 from devs:" in summary
    run = store.get_run("r1")
    assert (run["status"], run["message"]) == ("awaiting_approval", approval["reason"])
    assert out["batches"]["removals"]  # kept for after the approval
    with pytest.raises(pipeline.SafetyGateError, match="awaiting_approval"):
        pipeline.assert_may_apply(store, "r1")

    pipeline.approve_run(store, "r1", "admin")
    run = store.get_run("r1")
    assert (run["status"], run["approved_by"], run["message"]) == ("planned", "admin", None)
    pipeline.assert_may_apply(store, "r1")
    with pytest.raises(pipeline.SafetyGateError):  # once only
        pipeline.approve_run(store, "r1", "ops")


def test_a_rejected_or_unanswered_run_ends_blocked(store: AuditStore) -> None:
    prepared(store, "r1", leaving=3)
    pipeline.plan(store, "r1", parse_rules(RULES_TEXT % "[admin]"), "svc", RunOptions())
    pipeline.block_run(store, "r1", "rejected by admin: too many")
    with pytest.raises(pipeline.SafetyGateError, match="blocked"):
        pipeline.assert_may_apply(store, "r1")
    summary = pipeline.finish(store, "r1")
    assert (summary["status"], summary["message"]) == ("blocked", "rejected by admin: too many")
    assert {op["status"] for op in store.plan("r1")} == {"planned"}  # recorded, never applied


def test_without_approvers_a_tripped_gate_blocks_at_once(store: AuditStore) -> None:
    prepared(store, "r1", leaving=3)
    out = pipeline.plan(store, "r1", parse_rules(RULES_TEXT % "[]"), "svc", RunOptions())
    assert out["approval"]["needed"]
    assert out["approval"]["reason"].endswith(
        "; nobody can approve it: name Airflow user ids in safety.approvers of the rules")
    assert all(b == [] for b in out["batches"].values())
    run = store.get_run("r1")
    assert run["status"] == "blocked" and run["ended_at"] is not None
    assert run["message"] == out["approval"]["reason"]


def test_a_dry_run_stops_after_the_plan_even_when_a_gate_trips(store: AuditStore) -> None:
    prepared(store, "r1", leaving=3, dry_run=True)
    out = pipeline.plan(store, "r1", parse_rules(RULES_TEXT % "[admin]"), "svc",
                        RunOptions(dry_run=True))
    assert not out["approval"]["needed"] and out["approval"]["reason"]
    assert all(b == [] for b in out["batches"].values())
    run = store.get_run("r1")
    assert run["status"] == "dry_run"
    assert run["message"] == ("dry run: plan recorded, not applied; a real run would need "
                              f"approval: {out['approval']['reason']}")


def test_finish_blocks_a_run_still_waiting_for_approval(store: AuditStore) -> None:
    prepared(store, "r1", leaving=3)
    out = pipeline.plan(store, "r1", parse_rules(RULES_TEXT % "[admin]"), "svc", RunOptions())
    summary = pipeline.finish(store, "r1")  # e.g. the approval task crashed or was marked failed
    assert summary["status"] == "blocked"
    assert summary["message"] == f"not approved: {out['approval']['reason']}"


def test_group_deletions_are_listed_with_their_members() -> None:
    ops = [Operation(OpKind.DELETE_GROUP, "old-team", {"name": "old-team"}, "gone",
                     before={"members": 7})]
    result = plan(ops=ops, deleted_groups={"old-team": 7})
    text = pipeline.approval_summary("r1", "why", result, bb([]))
    assert "**Group deletions** (1):\n- delete group old-team (7 members): gone" in text
