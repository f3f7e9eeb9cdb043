"""Ownership and conflicts (design invariant 4, issue 16): the planner's rules, the audit trail
of owned groups, the apply's 409 handling, and how a run with conflicts ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings
from identity_sync.loading.apply import apply_batch
from identity_sync.mapping.rules import parse_rules
from identity_sync.model import BitbucketState, BitbucketUser, DesiredUser, key
from identity_sync.planning.operations import Operation, OpKind, assign_batches
from identity_sync.planning.planner import CONFLICT_KINDS, PlanInput, plan_changes

from .test_planner import bb, converge, desired, simulate

ANN = DesiredUser("u1", "ann", "Ann A", "ann@x.io", True)
BOB = DesiredUser("u2", "bob", "Bob B", "bob@x.io", True)


def kinds(plan) -> list[tuple[str, str]]:
    return [(op.kind.value, op.target) for op in plan.operations]


def conflict_kinds(plan) -> dict[str, str]:
    return {c["id"]: c["kind"] for c in plan.conflicts}


# -- groups: owned, named, foreign ----------------------------------------------------------------

def test_a_foreign_group_is_a_conflict_and_left_alone() -> None:
    current = bb([("ann", "Ann A", "ann@x.io"), ("zed", "Z", "z@x.io")],
                 {"devs": ["zed"], "stash-users": ["ann"]})
    d = desired([ANN], {"devs": ["ann"]}, {"devs": "LICENSED_USER"})
    plan = plan_changes(PlanInput(d, current, {"u1": "ann"}, owned_groups=[]))
    assert kinds(plan) == []
    assert plan.conflicts == [{"id": "devs", "kind": "group_exists", "record_type": "group",
                               "reason": plan.conflicts[0]["reason"]}]
    assert "groups.adopt_existing" in plan.conflicts[0]["reason"]
    # Owned (the sync created it) or named by the rules: managed as before.
    for inp in (PlanInput(d, current, {"u1": "ann"}, owned_groups=["DEVS"]),
                PlanInput(d, current, {"u1": "ann"}, owned_groups=[], named_groups=["devs"]),
                PlanInput(d, current, {"u1": "ann"})):  # ownership not tracked (old callers)
        first, _, second = converge(inp)
        assert kinds(first) == [("set_group_permission", "devs"), ("remove_membership", "zed"),
                                ("add_members", "devs")]
        assert first.conflicts == [] and second.operations == []


def test_a_group_the_plan_creates_is_managed_in_the_same_plan() -> None:
    plan = plan_changes(PlanInput(desired([ANN], {"devs": ["ann"]}), bb([]), {}, owned_groups=[]))
    assert kinds(plan) == [("create_group", "devs"), ("create_user", "ann"),
                           ("add_members", "devs")]


def test_a_privileged_group_is_never_changed_unless_allow_listed() -> None:
    current = bb([("ann", "Ann A", "ann@x.io"), ("root", "R", "r@x.io")],
                 {"admins": ["root"], "old": ["root"], "stash-users": ["ann"]},
                 group_permissions={"admins": "SYS_ADMIN", "old": "PROJECT_CREATE"})
    d = desired([ANN], {"admins": ["ann"]}, {"admins": "LICENSED_USER"})
    common = {"owned_groups": ["admins", "old"], "named_groups": ["admins"],
              "previously_managed_groups": ["old"], "delete_removed_groups": True}
    plan = plan_changes(PlanInput(d, current, {"u1": "ann"}, **common))
    assert kinds(plan) == []  # not joined, not emptied, permission kept, not deleted
    assert conflict_kinds(plan) == {"admins": "privileged_group", "old": "privileged_group"}
    assert plan.deleted_groups == {}
    allowed = plan_changes(PlanInput(d, current, {"u1": "ann"}, **common,
                                     privileged_allow_groups=["admins", "old"],
                                     privileged_allow_users=["root"]))
    assert kinds(allowed) == [("set_group_permission", "admins"),
                              ("remove_membership", "root"), ("add_members", "admins"),
                              ("delete_group", "old")]
    assert allowed.deleted_groups == {"old": 1}
    assert allowed.permission_removals == ["root"]


# -- accounts: privilege and adoption -------------------------------------------------------------

def test_a_privileged_account_is_never_adopted() -> None:
    for perms, groups in (({"ann": "ADMIN"}, {}), ({}, {"ops": ["ann"]})):
        current = bb([("ann", "Ann A", "ann@x.io")], {"devs": [], **groups},
                     user_permissions=perms, group_permissions={"ops": "PROJECT_CREATE"})
        plan = plan_changes(PlanInput(desired([ANN], {"devs": ["ann"]}), current, {}))
        assert kinds(plan) == [] and conflict_kinds(plan) == {"u1": "privileged_user"}
        assert "users.allow_privileged" in plan.conflicts[0]["reason"]
        allowed = plan_changes(PlanInput(desired([ANN], {"devs": ["ann"]}), current, {},
                                         privileged_allow_users=["ANN"]))
        assert kinds(allowed) == [("adopt_user", "ann"), ("add_members", "devs")]


def test_a_privileged_anchored_account_is_not_renamed_updated_or_deprovisioned() -> None:
    current = bb([("ann", "Old", "old@x.io"), ("bob", "Bob B", "bob@x.io")],
                 {"devs": ["ann", "bob"]}, user_permissions={"ann": "ADMIN", "bob": "SYS_ADMIN"})
    renamed = DesiredUser("u1", "ann.new", "Ann A", "evil@x.io", True)
    gone = DesiredUser("u2", "bob", "Bob B", "bob@x.io", False)
    plan = plan_changes(PlanInput(desired([renamed, gone], {"devs": ["ann.new"]}), current,
                                  {"u1": "ann", "u2": "bob"}))
    assert kinds(plan) == []
    assert conflict_kinds(plan) == {"u1": "privileged_user", "u2": "privileged_user"}
    assert plan.deprovisioned == []
    for policy in ("delete", "disable"):
        plan = plan_changes(PlanInput(desired([gone], {"devs": []}), current, {"u2": "bob"},
                                      deprovision=policy))
        assert kinds(plan) == []  # bob holds SYS_ADMIN: neither deleted nor stripped


def test_a_privileged_member_is_not_removed_from_a_managed_group() -> None:
    current = bb([("ann", "Ann A", "ann@x.io"), ("root", "R", "r@x.io")],
                 {"devs": ["ann", "root"]}, user_permissions={"root": "ADMIN"})
    plan = plan_changes(PlanInput(desired([ANN], {"devs": ["ann"]}), current, {"u1": "ann"}))
    assert kinds(plan) == [] and conflict_kinds(plan) == {"root": "privileged_user"}


def test_adoption_by_username_and_email_is_the_default() -> None:
    current = bb([("ann", "Ann A", "ANN@X.IO"), ("bob", "Bob B", "mallory@x.io")],
                 {"devs": []})
    d = desired([ANN, BOB], {"devs": ["ann", "bob"]})
    plan = plan_changes(PlanInput(d, current, {}))
    assert kinds(plan)[:1] == [("adopt_user", "ann")]
    assert all(op.target != "bob" and "bob" not in op.params.get("users", [])
               for op in plan.operations)
    assert conflict_kinds(plan) == {"u2": "details_differ"}
    assert "mallory@x.io" in plan.conflicts[0]["reason"]
    by_name = plan_changes(PlanInput(d, current, {}, adopt="username"))
    assert ("adopt_user", "bob") in kinds(by_name) and by_name.conflicts == []


def test_every_conflict_has_a_kind_and_a_record_type() -> None:
    current = bb([("ann", "Ann A", "ann@x.io"), ("bob", "Bob B", "bob@x.io"),
                  ("admin", "Admin", "admin@x.io"), ("dan", "Dan", "dan@x.io")], {"devs": []})
    current.users["cat"] = BitbucketUser("cat", "C", "cat@x.io", "LDAP", mutable=False)
    users = [ANN, BOB, DesiredUser("u3", "cat", "C", "cat@x.io", True),
             DesiredUser("u4", "admin", "Admin", "admin@x.io", True),
             DesiredUser("u5", "dan", "Bob B", "bob@x.io", True)]
    plan = plan_changes(PlanInput(desired(users, {"devs": []}), current,
                                  {"u9": "ann", "u5": "bob"}, protected_users=["admin"],
                                  adopt="none"))
    assert conflict_kinds(plan) == {"u1": "anchored_elsewhere", "u2": "anchored_elsewhere",
                                    "u3": "protected", "u4": "protected", "u5": "name_taken"}
    assert all(set(c) == {"id", "kind", "reason", "record_type"} and c["record_type"] == "user"
               and c["kind"] in CONFLICT_KINDS for c in plan.conflicts)
    off = plan_changes(PlanInput(desired([ANN], {"devs": []}), current, {}, adopt="none"))
    assert conflict_kinds(off) == {"u1": "adopt_off"}
    assert plan.conflict_counts() == {"anchored_elsewhere": 2, "protected": 2, "name_taken": 1}


def test_creates_carry_what_the_apply_needs_to_tell_ours_from_theirs() -> None:
    plan = plan_changes(PlanInput(desired([ANN], {}), bb([]), {"u7": "ann"},
                                  privileged_allow_users=["ann"], adopt="none"))
    create = next(op for op in plan.operations if op.kind is OpKind.CREATE_USER)
    assert create.params["ownership"] == {"adopt": "none", "anchored_to": "u7",
                                          "allow_privileged": True}


# -- held (quarantined) groups, and what the safety gate reads ------------------------------------

def test_a_held_group_is_not_deleted_emptied_or_filled() -> None:
    gone = DesiredUser("u2", "bob", "Bob B", "bob@x.io", False)
    current = bb([("ann", "Ann A", "ann@x.io"), ("bob", "Bob B", "bob@x.io")],
                 {"team": ["bob"], "devs": ["bob"]}, group_permissions={"team": "LICENSED_USER"})
    d = desired([ANN, gone], {"devs": ["ann"]})  # team dropped out: quarantined this run
    inp = PlanInput(d, current, {"u1": "ann", "u2": "bob"}, owned_groups=["team", "devs"],
                    previously_managed_groups=["team", "devs"], delete_removed_groups=True,
                    held_groups=["TEAM"])
    plan = plan_changes(inp)
    assert ("delete_group", "team") not in kinds(plan)
    assert all(op.params.get("group") != "team" for op in plan.operations)
    disable = next(op for op in plan.operations if op.kind is OpKind.DISABLE_USER)
    assert disable.before == {"groups": ["devs"]}
    d.managed_groups.append("team")
    d.memberships["team"] = ["ann"]  # still produced, but held: ann is not added either
    held = plan_changes(PlanInput(d, current, {"u1": "ann", "u2": "bob"}, held_groups=["team"]))
    assert all(op.params.get("group") != "team" for op in held.operations)


def test_deleted_groups_and_permission_removals_for_the_safety_gate() -> None:
    current = bb([("ann", "Ann A", "ann@x.io"), ("bob", "Bob B", "bob@x.io")],
                 {"old": ["ann", "bob"], "lic": ["ann", "bob"], "devs": ["bob"]},
                 group_permissions={"lic": "LICENSED_USER"})
    d = desired([ANN], {"lic": ["ann"], "devs": []})
    plan = plan_changes(PlanInput(d, current, {"u1": "ann"}, previously_managed_groups=["old"],
                                  delete_removed_groups=True))
    assert plan.deleted_groups == {"old": 2}
    assert plan.permission_removals == ["bob"]  # from lic; devs grants nothing


# -- random worlds: nothing privileged or foreign is ever changed ---------------------------------

NAMES = [f"user{i}" for i in range(10)]
GROUPS = ["alpha", "beta", "gamma"]
PERMISSIONS = [None, "LICENSED_USER", "PROJECT_CREATE", "ADMIN", "SYS_ADMIN"]


@st.composite
def worlds(draw: st.DrawFn) -> PlanInput:
    people = [DesiredUser(f"id{i}", n, f"U{i}", draw(st.sampled_from([f"{n}@x.io",
                                                                     f"{n}@evil.io"])),
                          draw(st.booleans())) for i, n in enumerate(NAMES) if draw(st.booleans())]
    wanted = {g: sorted({u.name for u in people if u.active and draw(st.booleans())})
              for g in GROUPS}
    existing = [(n, "U", f"{n}@x.io") for n in NAMES if draw(st.booleans())]
    members = {g: [n for n, _, _ in existing if draw(st.booleans())] for g in GROUPS}
    gperms = {g: p for g in GROUPS if (p := draw(st.sampled_from(PERMISSIONS)))}
    uperms = {key(n): p for n, _, _ in existing if (p := draw(st.sampled_from(PERMISSIONS)))}
    current = bb(existing, members, group_permissions=gperms, user_permissions=uperms)
    anchors = {f"id{i}": n for i, n in enumerate(NAMES)
               if key(n) in current.users and draw(st.booleans())}
    return PlanInput(desired(people, wanted), current, anchors,
                     deprovision=draw(st.sampled_from(["disable", "delete", "keep"])),
                     adopt=draw(st.sampled_from(["username_and_email", "username",
                                                 "username_or_email", "none"])),
                     owned_groups=draw(st.lists(st.sampled_from(GROUPS), unique=True)),
                     named_groups=draw(st.lists(st.sampled_from(GROUPS), unique=True)),
                     previously_managed_groups=GROUPS, delete_removed_groups=True)


def privileged_users(state: BitbucketState) -> set[str]:
    high = {"PROJECT_CREATE", "ADMIN", "SYS_ADMIN"}
    out = {u for u, p in state.user_permissions.items() if p in high}
    for g, p in state.group_permissions.items():
        if p in high:
            out |= {key(m) for m in state.memberships.get(g, [])}
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_privileged_and_foreign_things_are_never_changed(inp: PlanInput) -> None:
    plan = plan_changes(inp)
    before, after = inp.current, simulate(inp.current, plan)
    # the sync's own leavers, deleted, leave every group with their account
    for ms in [*before.memberships.values()]:
        ms[:] = [m for m in ms if key(m) in after.users]
    high = {"PROJECT_CREATE", "ADMIN", "SYS_ADMIN"}
    owned_or_named = {key(g) for g in [*(inp.owned_groups or []), *inp.named_groups]}
    for g in before.groups:
        if before.group_permissions.get(g) in high or g not in owned_or_named:
            if g == "stash-users":
                continue  # a licence group: only the sync's own leavers may leave it
            assert sorted(map(key, after.memberships.get(g, []))) == sorted(
                map(key, before.memberships.get(g, []))), (g, [o.describe() for o in
                                                               plan.operations])
            assert after.group_permissions.get(g) == before.group_permissions.get(g)
            assert g in after.groups
    for u in privileged_users(before):
        assert after.users.get(u) == before.users[u]
        assert after.user_permissions.get(u) == before.user_permissions.get(u)
        for g, ms in before.memberships.items():
            if u in {key(m) for m in ms}:
                assert u in {key(m) for m in after.memberships.get(g, [])}
    adopted = {key(op.target) for op in plan.operations if op.kind is OpKind.ADOPT_USER}
    assert not adopted & privileged_users(before)


# -- the audit trail of owned groups --------------------------------------------------------------

@pytest.fixture
def store(tmp_path) -> AuditStore:
    return AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")


def test_owned_groups_are_recorded_and_backfilled_from_the_audit_trail(store) -> None:
    ops = [Operation(OpKind.CREATE_GROUP, g, {"name": g}, "x") for g in ("Made", "Taken", "Lost")]
    assign_batches(ops, 100, 10)
    store.record_plan("old", ops)
    now = time.monotonic()
    store.record_attempt("old", ops[0].op_id, outcome="done", http_status=None, error=None,
                         started=now)
    # an older release took a 409 for done: that group existed already, it is not ours
    store.record_attempt("old", ops[1].op_id, outcome="done", http_status=409,
                         error="treated as done: exists", started=now)
    store.record_attempt("old", ops[2].op_id, outcome="failed", http_status=500, error="x",
                         started=now)
    store.record_owned_group("Fresh", "r2")
    store.record_owned_group("FRESH", "r3")  # the first record stays
    assert store.owned_groups() == {"fresh": "Fresh"}
    assert store.owned_groups(["Made", "Taken", "Lost", "Fresh"]) == {"fresh": "Fresh",
                                                                       "made": "Made"}
    assert store.owned_groups() == {"fresh": "Fresh", "made": "Made"}  # recorded once found


# -- the apply: 409 on create, add_members to a missing group -------------------------------------

@pytest.fixture
def served() -> Iterator[tuple[BitbucketClient, Any]]:
    app = create_bitbucket_app()
    with serving(app) as server:
        client = BitbucketClient(server.base_url, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                                 settings=HttpSettings(retries=0))
        yield client, app


def record(store: AuditStore, *ops: Operation) -> None:
    assign_batches(list(ops), batch_size=100, max_batches=10)
    pipeline.start(store, "r1", dag_id="d", trigger="manual", mode="full", dry_run=False,
                   rules_hash="x")
    store.record_plan("r1", list(ops))
    store.update_run("r1", status="applying")


def test_a_409_on_create_group_is_a_conflict_not_a_failure(served, store) -> None:
    client, _ = served
    client.create_group("theirs")
    record(store, *(Operation(OpKind.CREATE_GROUP, g, {"name": g}, "x")
                    for g in ("theirs", "ours")))
    result = apply_batch(store, client, "r1", "groups", 0)
    assert (result.done, result.failed, result.conflicts) == (1, 0, 1)
    result.raise_for_failures("groups")  # a conflict fails no task
    assert {op["target"]: op["status"] for op in store.plan("r1")} == {"theirs": "conflict",
                                                                       "ours": "done"}
    assert store.owned_groups() == {"ours": "ours"}
    summary = pipeline.finish(store, "r1")
    assert summary["status"] == "conflicts" and summary["conflicts"] == 1
    assert "create group theirs" in summary["message"]


def test_a_409_on_create_user_for_an_admin_is_a_conflict(served, store) -> None:
    client, _ = served
    client.create_user("root", "Root", "root@x.io")
    client.set_group_permission("stash-users", "LICENSED_USER")
    client.request("PUT", "/admin/permissions/users",
                   params={"name": "root", "permission": "ADMIN"})
    record(store, Operation(OpKind.CREATE_USER, "root", {
        "name": "root", "displayName": "Root", "email": "root@x.io"}, "new", idcs_id="u1"))
    result = apply_batch(store, client, "r1", "users", 0)
    assert (result.done, result.failed, result.conflicts) == (0, 0, 1)
    assert store.anchors() == {}
    assert "holds ADMIN" in store.attempts("r1")[0]["error"]


def test_add_members_to_a_missing_group_fails_at_once(served, store) -> None:
    client, app = served
    names = [f"u{i}" for i in range(8)]
    for name in names:
        client.create_user(name, name, f"{name}@x.io")
    record(store, Operation(OpKind.ADD_MEMBERS, "gone", {"group": "gone", "users": names}, "x"))
    app.state.calls.reset()
    result = apply_batch(store, client, "r1", "additions", 0)
    assert result.failed == 1 and "Group gone does not exist" in result.errors[0]
    assert app.state.calls.snapshot()["POST /rest/api/1.0/admin/groups/add-users"] == 1


# -- how a run with conflicts ends ----------------------------------------------------------------

def test_plan_time_conflicts_end_the_run_with_conflicts_not_success(store) -> None:
    record(store)
    store.record_quarantine("r1", [{"record_type": "user", "record_id": "u1", "reason": "r",
                                    "expectation": "conflict:privileged_user", "value": None}])
    summary = pipeline.finish(store, "r1")
    assert (summary["status"], summary["conflicts"]) == ("conflicts", 1)
    assert "user u1 (privileged_user)" in summary["message"]
    assert "conflicts: 1" in pipeline.format_summary(summary)


def test_failures_beside_conflicts_still_fail_the_run(store) -> None:
    ops = [Operation(OpKind.CREATE_GROUP, g, {"name": g}, "x") for g in ("a", "b")]
    record(store, *ops)
    store.record_attempt("r1", ops[0].op_id, outcome="conflict", http_status=409, error="c",
                         started=time.monotonic())
    store.record_attempt("r1", ops[1].op_id, outcome="failed", http_status=500, error="f",
                         started=time.monotonic())
    assert pipeline.finish(store, "r1")["status"] == "failed"


def test_finish_run_task_does_not_fail_the_dag_for_conflicts(store, monkeypatch, caplog,
                                                            capsys) -> None:
    from identity_sync_airflow import tasks

    record(store)
    store.record_quarantine("r1", [{"record_type": "group", "record_id": "admins",
                                    "reason": "r", "expectation": "conflict:privileged_group",
                                    "value": None}])
    monkeypatch.setattr(tasks, "_store", lambda: store)
    with caplog.at_level(logging.WARNING):
        summary = tasks.finish_run("r1")
    assert summary["status"] == "conflicts"
    logged = capsys.readouterr().out + caplog.text  # Airflow's logging or the plain one
    assert "ended with conflicts" in logged


def test_rules_name_groups_and_default_to_username_and_email() -> None:
    rules = parse_rules("groups: {rename: {A: a-team}, default_groups: [users], "
                        "new_user_groups: [welcome], permissions: {lic: LICENSED_USER}, "
                        "adopt_existing: [Legacy], allow_privileged: [admins]}\n"
                        "users: {allow_privileged: [jdoe]}\n")
    assert rules.groups.named_groups() == ["a-team", "Legacy", "lic", "users", "welcome"]
    assert rules.users.adopt == "username_and_email"
    assert (rules.groups.allow_privileged, rules.users.allow_privileged) == (["admins"],
                                                                            ["jdoe"])
