"""Conflicts, not takeovers (issue 16): ownership through both emulators' real HTTP APIs.

An IDCS administrator controls names in IDCS; that must never make them a Bitbucket
administrator, give them someone else's account, or let the sync join, empty or delete a group it
does not own. Every run here is scope ``all`` with the shipped rules otherwise, driven stage by
stage as the DAG drives them (``conftest.Env.run``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import yaml

from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.mapping.rules import DEFAULT_RULES_PATH, SyncRules, parse_rules
from identity_sync.model import key
from identity_sync.planning.operations import operation_users

from .conftest import Env

GROUP_SCHEMAS = ["urn:ietf:params:scim:schemas:core:2.0:Group"]


def rules(**sections: dict[str, Any]) -> SyncRules:
    """The shipped rules with scope ``all`` and the given keys merged into their sections."""
    data = yaml.safe_load(DEFAULT_RULES_PATH.read_text(encoding="utf-8"))
    data["scope"]["mode"] = "all"
    for section, values in sections.items():
        data[section].update(values)
    return parse_rules(yaml.safe_dump(data))


def org(seed: int = 16, users: int = 12) -> dict[str, Any]:
    return generate_idcs_org(seed, users, 3)


def add_user(data: dict[str, Any], user_name: str, email: str, display: str,
             **extra: Any) -> str:
    """Add an active IDCS user (a copy of the first one, with its own identity); its id."""
    data["users"] = [u for u in data["users"] if key(u["userName"]) != key(user_name)]
    user = copy.deepcopy(data["users"][0])
    uid = f"id-{user_name}"
    given, _, family = display.partition(" ")
    user.update({"id": uid, "ocid": f"ocid1.user.oc1..{uid}", "userName": user_name,
                 "displayName": display, "active": True,
                 "name": {"givenName": given, "familyName": family, "formatted": display},
                 "emails": [{"value": email, "type": "work", "primary": True,
                             "secondary": False, "verified": False}], **extra})
    data["users"].append(user)
    return uid


def add_group(data: dict[str, Any], display: str, member_ids: list[str]) -> str:
    gid = f"gid-{key(display).replace(' ', '-')}"
    data["groups"].append({"id": gid, "displayName": display, "schemas": GROUP_SCHEMAS,
                           "members": [{"value": i, "type": "User"} for i in member_ids]})
    return gid


def seed_bitbucket(env: Env, *, users: list[dict[str, Any]] = (),  # type: ignore[assignment]
                   groups: dict[str, list[str]] | None = None,
                   group_permissions: dict[str, str] | None = None,
                   user_permissions: dict[str, str] | None = None) -> None:
    """Add users, groups (name -> members) and permissions to what Bitbucket holds."""
    state = env.bb_state
    with state.lock:
        data = state.to_dict()
        data["users"] += [{"password": "x", **u} for u in users]
        data["groups"] += [{"name": g} for g in (groups or {}) if g not in
                           {x["name"] for x in data["groups"]}]
        data["memberships"].update(groups or {})
        data["group_permissions"].update(group_permissions or {})
        data["user_permissions"].update(user_permissions or {})
        state.load_dict(data)


def bb_user(env: Env, name: str) -> dict[str, Any] | None:
    return next((u for u in env.bb_state.to_dict()["users"] if key(u["name"]) == key(name)),
                None)


def members(env: Env, group: str) -> list[str]:
    return sorted(env.bb_state.to_dict()["memberships"].get(group, []), key=key)


def conflicts(env: Env, run_id: str) -> dict[tuple[str, str], str]:
    """(record type, id) -> kind, from the run's quarantine."""
    return {(q["record_type"], q["record_id"]): q["expectation"].removeprefix("conflict:")
            for q in env.store.quarantined(run_id)
            if (q["expectation"] or "").startswith("conflict:")}


def touches(env: Env, run_id: str, *, user: str | None = None,
            group: str | None = None) -> list[str]:
    """The run's operations that change ``user`` or ``group``."""
    out = []
    for op in env.store.plan(run_id):
        users = {key(u) for u in operation_users(op["kind"], op["target"], op["params"])}
        groups = {key(op["params"].get("group") or "")} | (
            {key(op["target"])} if op["kind"] in ("create_group", "delete_group",
                                                  "set_group_permission") else set())
        if (user and key(user) in users) or (group and key(group) in groups):
            out.append(f"{op['kind']} {op['target']}")
    return out


# -- (a) and (b): the measured takeovers ----------------------------------------------------------

def takeover_org() -> tuple[dict[str, Any], str, str]:
    data = org()
    mallory = add_user(data, "mallory", "mallory@example.com", "Mallory Evil",
                       title="Stash Administrators")
    jdoe = add_user(data, "jdoe", "mallory.jdoe@example.com", "John Doe")
    return data, mallory, jdoe


def seed_admins(env: Env) -> None:
    seed_bitbucket(
        env,
        users=[{"name": "realadmin", "displayName": "Real Admin",
                "emailAddress": "realadmin@corp.example"},
               {"name": "jdoe", "displayName": "John Doe", "emailAddress": "jdoe@corp.example"}],
        groups={"stash-administrators": ["realadmin"]},
        group_permissions={"stash-administrators": "SYS_ADMIN"},
        user_permissions={"jdoe": "ADMIN"})


def assert_no_takeover(env: Env, run_id: str, jdoe: str) -> None:
    before_jdoe = {"name": "jdoe", "displayName": "John Doe",
                   "emailAddress": "jdoe@corp.example"}
    after = env.bb_state.to_dict()
    assert members(env, "stash-administrators") == ["realadmin"]
    assert after["group_permissions"]["stash-administrators"] == "SYS_ADMIN"
    assert after["user_permissions"]["jdoe"] == "ADMIN"
    found = bb_user(env, "jdoe")
    assert found is not None
    assert {k: found[k] for k in before_jdoe} == before_jdoe
    assert jdoe not in env.store.anchors()
    assert "jdoe" not in {key(n) for n in env.store.anchors().values()}
    assert touches(env, run_id, user="jdoe") == []
    assert touches(env, run_id, group="stash-administrators") == []
    assert bb_user(env, "mallory") is not None  # the rest of the sync did happen
    found = conflicts(env, run_id)
    assert found[("group", "stash-administrators")] == "privileged_group"
    assert found[("user", jdoe)] == "privileged_user"


def test_an_idcs_admin_cannot_take_over_a_sys_admin_group_or_an_admin_account(
        make_env: Any) -> None:
    data, mallory, jdoe = takeover_org()
    add_group(data, "Stash Administrators", [mallory, jdoe])
    env: Env = make_env(data, rules())
    seed_admins(env)

    result = env.run("takeover")

    assert result.status == "conflicts", (result.message, result.apply_errors)
    assert "conflicts, not synced" in (result.message or "")
    assert_no_takeover(env, "takeover", jdoe)
    run = env.store.get_run("takeover") or {}
    assert run["counts"]["conflicts"]["privileged_group"] == 1
    assert run["counts"]["conflicts"]["privileged_user"] == 1

    again = env.run("takeover-again")  # and again: still nothing, still reported
    assert again.status == "conflicts"
    assert_no_takeover(env, "takeover-again", jdoe)


def test_no_takeover_through_a_group_from_a_user_attribute(make_env: Any) -> None:
    """groups.from_attribute: Mallory's IDCS title maps onto the SYS_ADMIN group's name."""
    data, _mallory, jdoe = takeover_org()
    env: Env = make_env(data, rules(groups={"from_attribute": {
        "attribute": "title", "name_template": "{value|slug}"}}))
    seed_admins(env)

    result = env.run("attribute")

    assert result.status == "conflicts", (result.message, result.apply_errors)
    assert_no_takeover(env, "attribute", jdoe)


def test_allow_listed_privileged_group_is_managed(make_env: Any) -> None:
    """What an administrator opts into is done: the allow-listed group gains its IDCS member;
    its privileged member leaves only once that account is allow-listed too."""
    data, mallory, _ = takeover_org()
    add_group(data, "Stash Administrators", [mallory])
    groups = {"allow_privileged": ["stash-administrators"],
              "adopt_existing": ["stash-administrators"]}
    env: Env = make_env(data, rules(groups=groups))
    seed_admins(env)

    env.run("allowed")

    assert members(env, "stash-administrators") == ["mallory", "realadmin"]
    assert conflicts(env, "allowed")[("user", "realadmin")] == "privileged_user"

    env.run("both", rules=rules(groups=groups, users={"allow_privileged": ["realadmin"]}))

    assert members(env, "stash-administrators") == ["mallory"]


# -- (c): 409 and read-back on create: done only when provably ours -------------------------------

def create_before_apply(env: Env, users: list[dict[str, Any]],
                        user_permissions: dict[str, str] | None = None) -> Callable[[], None]:
    """Accounts that appear between the plan and the first write (someone else's)."""
    return lambda: seed_bitbucket(env, users=users, user_permissions=user_permissions)


def op_of(env: Env, run_id: str, kind: str, target: str) -> dict[str, Any]:
    return next(op for op in env.store.plan(run_id)
                if op["kind"] == kind and key(op["target"]) == key(target))


def test_409_on_create_is_a_conflict_unless_the_account_is_provably_ours(make_env: Any) -> None:
    data = org(17)
    ids = {name: add_user(data, name, f"{name}@example.com", f"{name.title()} Person")
           for name in ("dana", "carol", "erin", "frank", "gina")}
    env: Env = make_env(data, rules())
    env.store.save_anchors("earlier", {"id-ghost": "carol"})  # carol's name belongs elsewhere
    same = {n: {"name": n, "displayName": f"{n.title()} Person",
                "emailAddress": f"{n}@example.com"} for n in ids}
    theirs = [
        {**same["dana"], "emailAddress": "dana@elsewhere.example"},  # someone else's dana
        same["carol"],  # same details, but anchored to another IDCS user
        {**same["erin"], "directoryName": "Corporate LDAP"},  # read-only directory
        same["frank"],  # same details, but an ADMIN
        same["gina"],  # same details, internal, unprivileged: provably ours
    ]
    before = {u["name"]: u for u in theirs}

    result = env.run("c409", before_apply=create_before_apply(env, theirs, {"frank": "ADMIN"}))

    assert result.status == "conflicts", (result.message, result.apply_errors)
    assert result.apply_errors == []
    anchors = env.store.anchors()
    for name in ("dana", "carol", "erin", "frank"):
        op = op_of(env, "c409", "create_user", name)
        assert op["status"] == "conflict", (name, op)
        attempt = [a for a in env.store.attempts("c409") if a["op_id"] == op["op_id"]][-1]
        assert (attempt["outcome"], attempt["http_status"]) == ("conflict", 409)
        assert ids[name] not in anchors
        found = bb_user(env, name)
        assert found is not None
        assert {k: found[k] for k in before[name]} == before[name]  # details untouched
        # and the account the plan meant to create was not put into any group
        assert all(key(name) not in {key(m) for m in ms}
                   for ms in env.bb_state.to_dict()["memberships"].values()), name
    assert anchors["id-ghost"] == "carol"
    assert anchors[ids["gina"]] == "gina"
    assert op_of(env, "c409", "create_user", "gina")["status"] == "done"
    reasons = {a["error"] for a in env.store.attempts("c409") if a["outcome"] == "conflict"}
    assert any("anchored to IDCS user id-ghost" in r for r in reasons)
    assert any("read-only directory" in r for r in reasons)
    assert any("holds ADMIN" in r for r in reasons)
    assert any("details differ" in r for r in reasons)
    assert env.bb_state.to_dict()["user_permissions"]["frank"] == "ADMIN"
    summary = env.store.get_run("c409") or {}
    assert summary["status"] == "conflicts"


def test_409_with_adoption_off_is_a_conflict(make_env: Any) -> None:
    data = org(18)
    hank = add_user(data, "hank", "hank@example.com", "Hank Person")
    env: Env = make_env(data, rules(users={"adopt": "none"}))
    same = {"name": "hank", "displayName": "Hank Person", "emailAddress": "hank@example.com"}

    result = env.run("off", before_apply=create_before_apply(env, [same]))

    assert result.status == "conflicts", result.message
    assert op_of(env, "off", "create_user", "hank")["status"] == "conflict"
    assert hank not in env.store.anchors()
    assert any("adoption is off" in (a["error"] or "") for a in env.store.attempts("off"))


def test_a_timed_out_create_of_our_own_account_still_counts_as_done(make_env: Any) -> None:
    data = org(19)
    env: Env = make_env(data, rules())
    assert env.run("first").status == "succeeded"
    data = env.idcs_app.state.emulator.to_dict()
    ivan = add_user(data, "ivan", "ivan@example.com", "Ivan Person")
    env.idcs_app.state.emulator.load_dict(data)

    def hold_the_answer() -> None:  # the create lands; its answer comes after the timeout
        env.control("bitbucket", "PUT", "faults", json={"script": [
            {"fault": "timeout", "method": "POST", "path": "/admin/users", "seconds": 1.5}]})

    result = env.run("second", before_apply=hold_the_answer)

    assert result.status == "succeeded", (result.message, result.apply_errors)
    op = op_of(env, "second", "create_user", "ivan")
    assert op["status"] == "done"
    attempt = [a for a in env.store.attempts("second") if a["op_id"] == op["op_id"]][-1]
    assert "user found on reading back" in attempt["error"]
    assert env.store.anchors()[ivan] == "ivan"
    assert env.duplicate_creates() == {}


# -- (d) add_members to a group deleted meanwhile -------------------------------------------------

def test_add_members_to_a_deleted_group_costs_one_request(make_env: Any) -> None:
    data = org(20)
    team = add_group(data, "Team Falcon", [])
    env: Env = make_env(data, rules())
    assert env.run("first").status == "succeeded"
    data = env.idcs_app.state.emulator.to_dict()
    group = next(g for g in data["groups"] if g["id"] == team)
    group["members"] = [{"value": u["id"], "type": "User"} for u in data["users"]
                        if u["active"]][:8]
    env.idcs_app.state.emulator.load_dict(data)
    env.control("bitbucket", "DELETE", "writes")

    result = env.run("second", before_apply=lambda: env.bitbucket().delete_group("team-falcon"))

    assert result.status == "failed"
    adds = [w for w in env.writes() if w["path"].endswith("/admin/groups/add-users")
            and (w["body"] or {}).get("group") == "team-falcon"]
    assert len(adds) == 1 and adds[0]["status"] == 404
    op = op_of(env, "second", "add_members", "team-falcon")
    assert len(op["params"]["users"]) >= 2 and op["status"] == "failed"
    error = [a for a in env.store.attempts("second") if a["op_id"] == op["op_id"]][-1]["error"]
    assert "does not exist" in error


# -- (e) a quarantined group is held -------------------------------------------------------------

def test_a_quarantined_group_is_neither_deleted_nor_emptied(make_env: Any) -> None:
    data = org(21)
    ids = [u["id"] for u in data["users"] if u["active"]][:4]
    add_group(data, "Team Rocket", ids)
    env: Env = make_env(data, rules(groups={"delete_removed": True}))
    assert env.run("first").status == "succeeded"
    kept = members(env, "team-rocket")
    assert len(kept) == 4
    # A second IDCS group now maps to the same Bitbucket name: the data-quality gate
    # quarantines both, so team-rocket drops out of this run's desired state.
    data = env.idcs_app.state.emulator.to_dict()
    add_group(data, "Team  Rocket", ids[:1])
    env.idcs_app.state.emulator.load_dict(data)

    result = env.run("second")

    quarantined = {q["record_id"] for q in env.store.quarantined("second")
                   if q["record_type"] == "group"}
    assert "gid-team-rocket" in quarantined, env.store.quarantined("second")
    assert result.status in ("succeeded", "conflicts"), result.message
    assert "team-rocket" in {g["name"] for g in env.bb_state.to_dict()["groups"]}
    assert members(env, "team-rocket") == kept
    assert touches(env, "second", group="team-rocket") == []


# -- (f) a pre-existing group named like an IDCS group --------------------------------------------

def test_an_existing_group_is_joined_only_when_the_rules_adopt_it(make_env: Any) -> None:
    data = org(22)
    ids = [u["id"] for u in data["users"] if u["active"]][:3]
    add_group(data, "Data Science", ids)
    env: Env = make_env(data, rules())
    seed_bitbucket(env, users=[{"name": "outsider", "displayName": "Out Sider",
                                "emailAddress": "outsider@corp.example"}],
                   groups={"data-science": ["outsider"]})

    result = env.run("first")

    assert result.status == "conflicts", result.message
    assert members(env, "data-science") == ["outsider"]
    assert touches(env, "first", group="data-science") == []
    assert conflicts(env, "first")[("group", "data-science")] == "group_exists"

    adopted = env.run("second", rules=rules(groups={"adopt_existing": ["data-science"]}))

    assert adopted.status == "succeeded", adopted.message
    names = {key(u["userName"]) for u in data["users"] if u["id"] in ids}
    assert {key(m) for m in members(env, "data-science")} == names


def test_groups_the_sync_created_stay_its_own(make_env: Any) -> None:
    """The first run creates the groups; the next sees them as its own (owned_groups), so a
    plain rerun is clean and changes in IDCS keep flowing."""
    data = org(23)
    ids = [u["id"] for u in data["users"] if u["active"]][:3]
    add_group(data, "Team Owl", ids[:2])
    env: Env = make_env(data, rules())
    assert env.run("first").status == "succeeded"
    assert "team-owl" in env.store.owned_groups()
    data = env.idcs_app.state.emulator.to_dict()
    next(g for g in data["groups"] if g["displayName"] == "Team Owl")["members"] = [
        {"value": i, "type": "User"} for i in ids[1:]]
    env.idcs_app.state.emulator.load_dict(data)

    result = env.run("second")

    assert result.status == "succeeded", result.message
    names = {key(u["userName"]) for u in data["users"] if u["id"] in ids[1:]}
    assert {key(m) for m in members(env, "team-owl")} == names
    assert conflicts(env, "second") == {}
