"""The on-login DAG and the subset parameters: only the named users change."""

from __future__ import annotations

import copy

import pytest
import requests

from identity_sync.audit.store import AuditStore
from identity_sync.emulators.bitbucket import DEMO_ADMIN_PASSWORD, DEMO_ADMIN_USER

from .conftest import Live
from .test_sync_dag import actual_state, expected_state, slug

pytestmark = pytest.mark.e2e
LOGIN = "idcs_bitbucket_login_sync"


def change_two_users(live: Live) -> tuple[str, str]:
    dump = copy.deepcopy(live.idcs_dump())
    names = sorted(expected_state(dump)[0])
    by_name = {u["userName"].lower(): u for u in dump["users"]}
    for name in names[:2]:
        by_name[name]["displayName"] = f"Changed {name}"
    live.load_idcs(dump)
    return names[0], names[1]


def test_login_sync_changes_only_that_user(live: Live) -> None:
    assert str(live.run_dag().state) == "success"
    alice, bob = change_two_users(live)
    run = live.run_dag(LOGIN, username=alice.upper())  # userName matches case-insensitively
    assert str(run.state) == "success"
    users, _ = actual_state(live)
    assert users[alice][0] == f"Changed {alice}"
    assert users[bob][0] != f"Changed {bob}"  # not part of this run
    store = AuditStore(live.audit_url)
    plan = store.plan(run.run_id)
    assert [(op["kind"], op["target"]) for op in plan] == [("update_user", alice)]
    assert store.get_run(run.run_id)["mode"] == "user"


def test_login_of_a_new_user_creates_them_with_their_groups(live: Live) -> None:
    want_users, want_members = expected_state(live.idcs_dump())
    newcomer = sorted(want_users)[5]
    run = live.run_dag(LOGIN, username=newcomer)
    assert str(run.state) == "success"
    users, members = actual_state(live)
    assert set(users) == {newcomer}
    assert users[newcomer] == want_users[newcomer]
    for group, wanted in want_members.items():
        assert (newcomer in members.get(group, set())) == (newcomer in wanted), group
    second = live.run_dag(LOGIN, username=newcomer)
    assert AuditStore(live.audit_url).plan(second.run_id) == []


def test_login_sync_of_an_unknown_user_stops_with_a_reason(live: Live) -> None:
    run = live.run_dag(LOGIN, username="nobody.at.all")
    assert str(run.state) == "failed"
    record = AuditStore(live.audit_url).get_run(run.run_id)
    assert record["status"] == "failed"
    assert record["message"] == ("nobody.at.all: not found in the IDCS scope (unknown userName, "
                                 "or not granted the Bitbucket app); nothing synced")
    assert actual_state(live)[0] == {}


def test_manual_subset_of_users_and_groups(live: Live) -> None:
    assert str(live.run_dag().state) == "success"
    alice, bob = change_two_users(live)
    run = live.run_dag(users=[bob])
    assert str(run.state) == "success"
    users, _ = actual_state(live)
    assert users[bob][0] == f"Changed {bob}" and users[alice][0] != f"Changed {alice}"
    assert AuditStore(live.audit_url).get_run(run.run_id)["mode"] == "subset"


def test_incremental_run_syncs_only_changed_users_and_full_run_repairs_drift(live: Live) -> None:
    first = live.run_dag()
    store = AuditStore(live.audit_url)
    assert store.get_run(first.run_id)["mode"] == "full"
    alice, bob = change_two_users(live)
    # Drift made by hand in Bitbucket: a member removed from the licence group.
    members = actual_state(live)[1]
    victim = sorted(members["bitbucket-users"] - {alice, bob})[0]
    requests.post(f"{live.bitbucket_url}/rest/api/1.0/admin/users/remove-group",
                  json={"context": victim, "itemName": "bitbucket-users"},
                  auth=(DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD), timeout=10).raise_for_status()

    incremental = live.run_dag()
    record = store.get_run(incremental.run_id)
    assert (str(incremental.state), record["mode"]) == ("success", "incremental")
    assert {op["target"] for op in store.plan(incremental.run_id)} == {alice, bob}
    assert victim not in actual_state(live)[1]["bitbucket-users"]  # not its business

    full = live.run_dag(mode="full")
    assert store.get_run(full.run_id)["mode"] == "full"
    assert [(op["kind"], op["params"]["users"]) for op in store.plan(full.run_id)] == [
        ("add_members", [victim])]
    assert victim in actual_state(live)[1]["bitbucket-users"]
    nothing = live.run_dag()
    assert store.get_run(nothing.run_id)["mode"] == "incremental"
    assert store.plan(nothing.run_id) == []


def test_manual_subset_of_a_group_syncs_its_members_only(live: Live) -> None:
    dump = live.idcs_dump()
    want_members = expected_state(dump)[1]
    # The biggest group that is not also a default group (bitbucket-users takes everybody).
    group = max((g for g in dump["groups"] if want_members.get(slug(g["displayName"]))
                 and slug(g["displayName"]) != "bitbucket-users"),
                key=lambda g: len(want_members[slug(g["displayName"])]))
    name = slug(group["displayName"])
    run = live.run_dag(groups=[group["displayName"]])
    assert str(run.state) == "success"
    users, members = actual_state(live)
    assert set(users) == want_members[name]  # only that group's members were created
    assert members[name] == want_members[name]
