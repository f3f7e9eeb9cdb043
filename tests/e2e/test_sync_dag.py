"""The DAG, run by ``dag.test()`` against both emulators serving on real sockets.

The expected Bitbucket state is computed here, independently of the pipeline's code, from the
IDCS emulator's raw SCIM data and the bundled rules."""

from __future__ import annotations

import copy
import re
import unicodedata
from collections import defaultdict
from typing import Any

import pytest

from identity_sync.audit.store import AuditStore
from identity_sync.emulators.idcs import DEMO_APP_ID

from .conftest import Live

pytestmark = pytest.mark.e2e
SERVICE_USERS = {"sync-admin", "admin"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def work_email(user: dict[str, Any]) -> str | None:
    emails = user.get("emails") or []
    for e in emails:
        if e.get("primary"):
            return e["value"]
    return next((e["value"] for e in emails if e.get("type") == "work"), None)


def expected_state(dump: dict[str, Any]) -> tuple[dict[str, tuple[str, str]], dict[str, set[str]]]:
    """Users (name -> (displayName, email)) and memberships (group -> names) the rules want."""
    grants = [g for g in dump["grants"] if g["app"]["value"] == DEMO_APP_ID]
    granted_users = {g["grantee"]["value"] for g in grants if g["grantee"]["type"] == "User"}
    granted_groups = {g["grantee"]["value"] for g in grants if g["grantee"]["type"] == "Group"}
    groups_of: dict[str, set[str]] = defaultdict(set)
    for group in dump["groups"]:
        for member in group.get("members") or []:
            groups_of[member["value"]].add(group["id"])
    in_scope = [u for u in dump["users"]
                if (u["id"] in granted_users or groups_of[u["id"]] & granted_groups)
                and not u["userName"].startswith("svc-")]
    names = defaultdict(int)
    for u in in_scope:
        names[u["userName"].lower()] += 1
    clean = [u for u in in_scope if names[u["userName"].lower()] == 1
             and work_email(u) and EMAIL.match(work_email(u))]
    active = [u for u in clean if u.get("active", True)]
    users = {u["userName"].lower(): (" ".join(u["displayName"].split()), work_email(u).lower())
             for u in active}
    group_name = {g["id"]: slug(g["displayName"]) for g in dump["groups"]}
    memberships: dict[str, set[str]] = {name: set() for name in group_name.values()}
    memberships["bitbucket-users"] = set(users)
    for u in active:
        for gid in groups_of[u["id"]]:
            memberships[group_name[gid]].add(u["userName"].lower())
    return users, memberships


def actual_state(live: Live) -> tuple[dict[str, tuple[str, str]], dict[str, set[str]]]:
    users = {u["name"]: (u["displayName"], u["emailAddress"])
             for u in live.bb_get("/admin/users") if u["name"] not in SERVICE_USERS}
    memberships = {g["name"]: {m["name"] for m in live.bb_get("/admin/groups/more-members",
                                                             context=g["name"])}
                   for g in live.bb_get("/admin/groups")}
    return users, memberships


def assert_in_step(live: Live) -> None:
    want_users, want_members = expected_state(live.idcs_dump())
    got_users, got_members = actual_state(live)
    assert got_users.keys() >= want_users.keys()
    assert {n: got_users[n] for n in want_users} == want_users
    for group, members in want_members.items():
        assert got_members.get(group) == members, group


def test_first_sync_matches_idcs_and_second_plans_nothing(live: Live) -> None:
    first = live.run_dag()
    assert str(first.state) == "success"
    assert_in_step(live)
    permissions = {p["group"]["name"]: p["permission"]
                   for p in live.bb_get("/admin/permissions/groups")}
    assert permissions["bitbucket-users"] == "LICENSED_USER"

    store = AuditStore(live.audit_url)
    run = store.get_run(first.run_id)
    assert run["status"] == "succeeded"
    plan = store.plan(first.run_id)
    assert plan and all(op["status"] == "done" for op in plan)
    assert len(store.anchors()) == len(expected_state(live.idcs_dump())[0])

    second = live.run_dag()
    assert str(second.state) == "success"
    assert store.plan(second.run_id) == []
    assert store.get_run(second.run_id)["status"] == "succeeded"


def test_idcs_changes_flow_through_and_converge(live: Live) -> None:
    assert str(live.run_dag().state) == "success"
    dump = copy.deepcopy(live.idcs_dump())
    want_users, _ = expected_state(dump)
    by_name = {u["userName"].lower(): u for u in dump["users"]}
    leaver, renamed, moved = (by_name[n] for n in sorted(want_users)[:3])
    leaver["active"] = False
    old_name = renamed["userName"].lower()
    renamed["userName"] = f"{renamed['userName']}.renamed"
    moved["displayName"] = "Changed Display Name"
    live.load_idcs(dump)

    run = live.run_dag()
    assert str(run.state) == "success"
    assert_in_step(live)
    got_users, got_members = actual_state(live)
    leaver_name = leaver["userName"].lower()
    assert leaver_name in got_users  # disabled, not deleted: history kept
    assert all(leaver_name not in members for members in got_members.values())
    assert old_name not in got_users and f"{old_name}.renamed" in got_users

    store = AuditStore(live.audit_url)
    kinds = {(op["kind"], op["target"]) for op in store.plan(run.run_id)}
    assert ("rename_user", old_name) in kinds
    assert ("update_user", moved["userName"].lower()) in kinds
    assert ("remove_membership", leaver_name) in kinds
    assert str(live.run_dag().state) == "success"
    assert store.runs(1)[0]["counts"]["operations"] == {}


def test_dry_run_records_the_plan_and_writes_nothing(live: Live) -> None:
    run = live.run_dag(dry_run=True)
    assert str(run.state) == "success"
    assert actual_state(live)[0] == {}
    store = AuditStore(live.audit_url)
    assert store.get_run(run.run_id)["status"] == "dry_run"
    assert {op["status"] for op in store.plan(run.run_id)} == {"planned"}


def test_empty_scope_fails_closed_before_touching_bitbucket(live: Live) -> None:
    dump = copy.deepcopy(live.idcs_dump())
    dump["grants"] = []
    live.load_idcs(dump)
    run = live.run_dag()
    assert str(run.state) == "failed"
    store = AuditStore(live.audit_url)
    record = store.get_run(run.run_id)
    assert record["status"] == "failed"
    assert record["message"].startswith("critical data-quality failure")
    assert actual_state(live)[0] == {}
    assert store.plan(run.run_id) == []


def test_email_change_case_only_change_and_reactivation(live: Live) -> None:
    assert str(live.run_dag().state) == "success"
    dump = copy.deepcopy(live.idcs_dump())
    names = sorted(expected_state(dump)[0])
    by_name = {u["userName"].lower(): u for u in dump["users"]}
    mover, recased, leaver = by_name[names[0]], by_name[names[1]], by_name[names[2]]
    mover["emails"] = [{"value": "New.Address@example.com", "type": "work", "primary": True}]
    recased["userName"] = recased["userName"].upper()
    leaver["active"] = False
    live.load_idcs(dump)

    disabled = live.run_dag()
    assert str(disabled.state) == "success"
    assert_in_step(live)
    store = AuditStore(live.audit_url)
    ops = {(op["kind"], op["target"]): op for op in store.plan(disabled.run_id)}
    assert ops[("update_user", names[0])]["after"]["email"] == "new.address@example.com"
    assert not any(target == names[1] for _, target in ops)  # case-only: nothing to do
    assert ops[("disable_user", names[2])]["reason"] == "deprovision (disable): inactive in IDCS"

    leaver["active"] = True
    live.load_idcs(dump)
    back = live.run_dag()
    assert str(back.state) == "success"
    assert_in_step(live)
    kinds = {(op["kind"], op["target"]) for op in store.plan(back.run_id)}
    assert ("reactivate_user", names[2]) in kinds
    summary = store.get_run(back.run_id)
    assert summary["status"] == "succeeded"


def deactivate(live: Live, count: int) -> set[str]:
    """Deactivate the first ``count`` in-scope users in IDCS; their Bitbucket names."""
    dump = copy.deepcopy(live.idcs_dump())
    leaving = set(sorted(expected_state(dump)[0])[:count])
    for u in dump["users"]:
        if u["userName"].lower() in leaving:
            u["active"] = False
    live.load_idcs(dump)
    return leaving


def test_mass_deprovisioning_without_approvers_is_blocked_at_once(
        live: Live, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No approver named: a tripped gate ends the run blocked, with nothing written. (The
    approval itself, Approve / Reject / timeout, is in test_approval_rest.py: ``dag.test()``
    would wait for an answer forever.)"""
    from identity_sync.mapping.rules import DEFAULT_RULES_PATH

    rules = tmp_path / "rules.yaml"
    rules.write_text(DEFAULT_RULES_PATH.read_text().replace("approvers: [admin]", "approvers: []"))
    monkeypatch.setenv("IDSYNC_RULES_FILE", str(rules))
    assert str(live.run_dag().state) == "success"
    deactivate(live, 12)
    members_before = actual_state(live)[1]

    blocked = live.run_dag()
    assert str(blocked.state) == "failed"
    store = AuditStore(live.audit_url)
    record = store.get_run(blocked.run_id)
    assert record["status"] == "blocked"
    assert record["message"].startswith("plan takes access from 12 users")
    assert record["message"].endswith("nobody can approve it: name Airflow user ids in "
                                      "safety.approvers of the rules")
    assert "\n" not in record["message"]
    assert {op["status"] for op in store.plan(blocked.run_id)} == {"planned"}  # kept, not run
    assert actual_state(live)[1] == members_before  # nothing written
    states = {ti.task_id: str(ti.state) for ti in blocked.get_task_instances()}
    assert states["approve_plan"] == "success" and states["finish_run"] == "failed"
    assert {states[f"apply_{p}"] for p in ("groups", "users", "removals", "additions")} == {
        "skipped"}
