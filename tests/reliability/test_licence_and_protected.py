"""Licence exhaustion and protected principals, through the real stages on live emulators."""

from __future__ import annotations

import re
from typing import Any

import yaml

from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.mapping.rules import DEFAULT_RULES_PATH, parse_rules
from identity_sync.model import key
from identity_sync.planning.operations import operation_users

from .conftest import Env

ORG = generate_idcs_org(5, 150, 12)


def licensed(env: Env) -> int:
    return env.control("bitbucket", "GET", "licence")["licensed"]


def test_licence_exhaustion_stops_additions_reports_seats_and_keeps_freeing(
        make_env: Any) -> None:
    env: Env = make_env(ORG)
    assert env.run("first").status == "succeeded"
    org = env.idcs_app.state.emulator.to_dict()
    # Eight people are granted the app (they need seats: the licence comes with
    # bitbucket-users); five leave (freeing five); four get new display names (no seat).
    granted = next(g for g in org["groups"] if g["displayName"] == "Bitbucket Users")
    newcomers = [u for u in org["users"] if u["active"]
                 and env.bb_state.find_user(u["userName"]) is None][:8]
    granted["members"] += [{"value": u["id"], "type": "User"} for u in newcomers]
    synced = [u for u in org["users"] if u["active"]
              and env.bb_state.find_user(u["userName"]) is not None]
    leaving, renamed = synced[:5], synced[5:9]
    for user in leaving:
        user["active"] = False
    for user in renamed:
        user["displayName"] += " Jr"
    env.idcs_app.state.emulator.load_dict(org)
    seats_needed = len(newcomers)
    env.control("bitbucket", "PUT", "licence", json={"limit": licensed(env) + 1})

    second = env.run("second", approve=True)

    assert second.status == "failed"
    stop = second.apply_errors[0]
    assert "licence limit reached" in stop
    missing = re.search(r"(\d+) licence seats missing", stop)
    # everyone coming back who would get a seat through bitbucket-users (in the app's scope)
    assert missing and 1 <= int(missing.group(1)) <= seats_needed
    ops = env.store.plan("second")
    by_kind: dict[str, set[str]] = {}
    for op in ops:
        by_kind.setdefault(op["kind"], set()).add(op["status"])
    # everything that needs no seat, or frees one, was done
    for kind in ("update_user", "remove_membership", "disable_user", "create_user"):
        assert by_kind.get(kind, {"done"}) == {"done"}, (kind, by_kind)
    assert "failed" in by_kind["add_members"]
    assert {u["userName"].lower() for u in leaving}.isdisjoint(
        {key(n) for n in env.bb_state.to_dict()["memberships"].get("bitbucket-users", [])})
    assert licensed(env) <= env.control("bitbucket", "GET", "licence")["limit"]
    state = env.bb_state
    with state.lock:  # created (no seat needed), but not licensed
        assert all(state.find_user(u["userName"]) is not None for u in newcomers)
        assert not {state.find_user(u["userName"]).id for u in newcomers} & state.licensed_ids()

    env.control("bitbucket", "PUT", "licence", json={"limit": None})  # seats bought
    cleared = env.clear_and_rerun("second")
    assert cleared.status == "succeeded" and env.divergence("second") == []


def test_protected_service_account_and_admin_group_are_never_touched(make_env: Any) -> None:
    """IDCS says: nobody is in the admin group, and the service account (anchored to an IDCS
    user who is now inactive) is in nothing. Plan and apply must leave both alone."""
    data = yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    data["groups"]["protected"] = ["bitbucket-admins"]
    rules = parse_rules(yaml.safe_dump(data))
    env: Env = make_env(ORG, rules)
    org = env.idcs_app.state.emulator.to_dict()
    admins_group = next(g for g in org["groups"] if g["displayName"] == "Bitbucket Admins")
    admins_group["members"] = []
    leaver = next(u for u in org["users"] if u["active"])
    leaver["active"] = False
    env.idcs_app.state.emulator.load_dict(org)
    env.store.save_anchors("earlier", {leaver["id"]: "sync-admin"})  # a bad anchor, say
    state = env.bb_state
    with state.lock:
        state.load_dict({**state.to_dict(),
                         "groups": [*state.to_dict()["groups"],
                                    {"name": "bitbucket-admins"}, {"name": "bitbucket-users"}],
                         "memberships": {"bitbucket-admins": ["admin", "sync-admin"],
                                         "bitbucket-users": ["sync-admin"],
                                         "stash-users": ["sync-admin"]},
                         "group_permissions": {"stash-users": "LICENSED_USER",
                                               "bitbucket-users": "LICENSED_USER",
                                               "bitbucket-admins": "ADMIN"}})
    before = state.to_dict()

    result = env.run("protected", rules=rules, approve=True)

    assert result.status == "succeeded", result.message
    plan = env.store.plan("protected")
    touched = {key(u) for op in plan
               for u in operation_users(op["kind"], op["target"], op["params"])}
    assert "sync-admin" not in touched
    assert not [op for op in plan if key(op["target"]) == "bitbucket-admins"
                or key(str(op["params"].get("group", ""))) == "bitbucket-admins"]
    after = state.to_dict()
    for group in ("bitbucket-admins", "bitbucket-users", "stash-users"):
        assert "sync-admin" in after["memberships"][group]
    assert after["memberships"]["bitbucket-admins"] == before["memberships"]["bitbucket-admins"]
    assert after["group_permissions"]["bitbucket-admins"] == "ADMIN"
    assert after["user_permissions"]["sync-admin"] == before["user_permissions"]["sync-admin"]
    sync_admin = next(u for u in after["users"] if u["name"] == "sync-admin")
    assert sync_admin == next(u for u in before["users"] if u["name"] == "sync-admin")
    assert len(after["users"]) > len(before["users"])  # the rest of the sync did happen
