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
                if u["id"] in granted_users or groups_of[u["id"]] & granted_groups]
    names = defaultdict(int)
    for u in in_scope:
        names[u["userName"].lower()] += 1
    clean = [u for u in in_scope if names[u["userName"].lower()] == 1
             and work_email(u) and EMAIL.match(work_email(u))]
    active = [u for u in clean if u.get("active", True)]
    users = {u["userName"].lower(): (u["displayName"].strip(), work_email(u).lower())
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
