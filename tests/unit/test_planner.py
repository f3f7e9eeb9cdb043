"""Planner properties: the plan converges, re-planning is empty, and ownership is respected."""

from __future__ import annotations

import copy
import dataclasses
import random

import pytest

from identity_sync.model import BitbucketState, BitbucketUser, DesiredState, DesiredUser, key
from identity_sync.planning.operations import OpKind, assign_batches, batch_refs
from identity_sync.planning.planner import Plan, PlanInput, plan_changes


def simulate(state: BitbucketState, plan: Plan) -> BitbucketState:
    """Apply a plan to an in-memory Bitbucket the way the real API would."""
    s = copy.deepcopy(state)
    for op in plan.operations:
        p = op.params
        match op.kind:
            case OpKind.CREATE_GROUP:
                s.groups[key(p["name"])] = p["name"]
                s.memberships[key(p["name"])] = []
            case OpKind.SET_GROUP_PERMISSION:
                s.group_permissions[key(p["group"])] = p["permission"]
            case OpKind.CREATE_USER:
                s.users[key(p["name"])] = BitbucketUser(p["name"], p["displayName"], p["email"])
            case OpKind.UPDATE_USER:
                s.users[key(p["name"])] = BitbucketUser(p["name"], p["displayName"], p["email"])
            case OpKind.RENAME_USER:
                old = s.users.pop(key(p["name"]))
                s.users[key(p["newName"])] = BitbucketUser(p["newName"], old.display_name,
                                                           old.email)
                for members in s.memberships.values():
                    members[:] = [p["newName"] if key(m) == key(p["name"]) else m
                                  for m in members]
            case OpKind.DELETE_USER:
                s.users.pop(key(p["name"]))
                s.user_permissions.pop(key(p["name"]), None)
                for members in s.memberships.values():
                    members[:] = [m for m in members if key(m) != key(p["name"])]
            case OpKind.REMOVE_MEMBERSHIP:
                members = s.memberships[key(p["group"])]
                members[:] = [m for m in members if key(m) != key(p["user"])]
            case OpKind.REVOKE_USER_PERMISSION:
                s.user_permissions.pop(key(p["name"]), None)
            case OpKind.ADD_MEMBERS:
                members = s.memberships.setdefault(key(p["group"]), [])
                members.extend(u for u in p["users"] if key(u) not in {key(m) for m in members})
            case OpKind.ADOPT_USER:
                pass
    return s


def desired(users: list[DesiredUser], memberships: dict[str, list[str]],
            permissions: dict[str, str] | None = None) -> DesiredState:
    return DesiredState({u.idcs_id: u for u in users}, sorted(memberships), memberships,
                        permissions or {})


def bb(users: list[tuple[str, str, str]], memberships: dict[str, list[str]] | None = None,
       **kw: dict) -> BitbucketState:
    memberships = memberships or {}
    return BitbucketState(
        users={key(n): BitbucketUser(n, d, e) for n, d, e in users},
        groups={key(g): g for g in [*memberships, "stash-users"]},
        memberships={key(g): m for g, m in memberships.items()}, **kw)


def converge(inp: PlanInput) -> tuple[Plan, BitbucketState, Plan]:
    """Plan, apply the plan in memory, plan again with the same inputs (the groups the first
    plan created now owned, when ownership is tracked)."""
    first = plan_changes(inp)
    after = simulate(inp.current, first)
    owned = None if inp.owned_groups is None else [
        *inp.owned_groups, *(op.target for op in first.operations
                             if op.kind is OpKind.CREATE_GROUP)]
    second = plan_changes(dataclasses.replace(inp, current=after, anchors=first.anchors,
                                              owned_groups=owned))
    return first, after, second


ALICE = DesiredUser("u1", "alice", "Alice A", "alice@x.io", True)
BOB = DesiredUser("u2", "bob", "Bob B", "bob@x.io", True)


def test_initial_sync_creates_everything_then_nothing() -> None:
    inp = PlanInput(desired([ALICE, BOB], {"devs": ["alice", "bob"], "ops": ["bob"]},
                            {"devs": "LICENSED_USER"}), bb([]), {})
    first, after, second = converge(inp)
    assert first.counts() == {"create_group": 2, "set_group_permission": 1, "create_user": 2,
                              "add_members": 2}
    assert after.memberships == {"devs": ["alice", "bob"], "ops": ["bob"]}
    assert after.group_permissions == {"devs": "LICENSED_USER"}
    assert second.operations == []
    assert first.anchors == {"u1": "alice", "u2": "bob"}


def test_existing_user_is_adopted_case_insensitively_and_updated() -> None:
    current = bb([("Alice", "Old Name", "alice@x.io")], {"devs": []})
    first, _after, second = converge(PlanInput(desired([ALICE], {"devs": ["alice"]}), current, {}))
    kinds = [op.kind for op in first.operations]
    assert kinds == [OpKind.ADOPT_USER, OpKind.UPDATE_USER, OpKind.ADD_MEMBERS]
    assert first.operations[1].params == {"name": "Alice", "displayName": "Alice A",
                                          "email": "alice@x.io"}
    assert first.operations[2].params["users"] == ["Alice"]  # Bitbucket's own spelling
    assert first.anchors == {"u1": "Alice"}
    assert second.operations == []


def test_idcs_rename_becomes_bitbucket_rename() -> None:
    renamed = DesiredUser("u1", "alice.new", "Alice A", "alice@x.io", True)
    current = bb([("alice", "Alice A", "alice@x.io")], {"devs": ["alice"]})
    first, after, second = converge(PlanInput(desired([renamed], {"devs": ["alice.new"]}),
                                              current, {"u1": "alice"}))
    assert [op.kind for op in first.operations] == [OpKind.RENAME_USER]
    assert "alice.new" in after.users and "alice" not in after.users
    assert after.memberships["devs"] == ["alice.new"]
    assert second.operations == []


def test_rename_to_taken_name_is_not_done_and_membership_follows_old_name() -> None:
    renamed = DesiredUser("u1", "bob", "Alice A", "alice@x.io", True)
    current = bb([("alice", "Alice A", "alice@x.io"), ("bob", "Other Bob", "ob@x.io")],
                 {"devs": []})
    first, _, second = converge(PlanInput(desired([renamed], {"devs": ["bob"]}), current,
                                          {"u1": "alice"}))
    # alice was in no group: she counts as returning, and joins devs under her old name.
    assert [(op.kind, op.params.get("users")) for op in first.operations] == [
        (OpKind.REACTIVATE_USER, None), (OpKind.ADD_MEMBERS, ["alice"])]
    assert first.conflicts == [{"id": "u1", "kind": "name_taken", "record_type": "user",
                                "reason": "rename of 'alice' to 'bob' blocked: "
                                          "that Bitbucket name is taken"}]
    assert second.operations == []


def test_inactive_user_is_disabled_not_deleted() -> None:
    gone = DesiredUser("u2", "bob", "Bob B", "bob@x.io", False)
    current = bb([("alice", "Alice A", "alice@x.io"), ("bob", "Bob B", "bob@x.io")],
                 {"devs": ["alice", "bob"]}, user_permissions={"bob": "PROJECT_CREATE"})
    # bob holds PROJECT_CREATE: privileged, so deprovisioned only because he is allow-listed
    first, after, second = converge(PlanInput(desired([ALICE, gone], {"devs": ["alice"]}),
                                              current, {"u1": "alice", "u2": "bob"},
                                              privileged_allow_users=["bob"]))
    assert first.deprovisioned == ["bob"]
    assert [op.kind for op in first.operations] == [OpKind.DISABLE_USER,
                                                    OpKind.REVOKE_USER_PERMISSION,
                                                    OpKind.REMOVE_MEMBERSHIP]
    assert first.operations[0].before == {"groups": ["devs"]}
    assert all(op.reason.startswith("deprovision (disable): inactive in IDCS")
               for op in first.operations)
    assert "bob" in after.users and after.memberships["devs"] == ["alice"]
    assert second.operations == []


def test_user_leaving_scope_is_deleted_under_delete_policy() -> None:
    current = bb([("alice", "Alice A", "alice@x.io"), ("bob", "Bob B", "bob@x.io")],
                 {"devs": ["alice", "bob"]})
    first, after, second = converge(PlanInput(desired([ALICE], {"devs": ["alice"]}), current,
                                              {"u1": "alice", "u2": "bob"}, deprovision="delete"))
    assert [(op.kind, op.reason) for op in first.operations] == [
        (OpKind.DELETE_USER, "deprovision (delete): left the IDCS scope")]
    assert "bob" not in after.users
    assert first.anchors == {"u1": "alice"}
    assert second.operations == []


def test_keep_policy_changes_nothing_for_leavers() -> None:
    current = bb([("bob", "Bob B", "bob@x.io")], {"devs": []})
    plan = plan_changes(PlanInput(desired([], {"devs": []}), current, {"u2": "bob"},
                                  deprovision="keep"))
    assert plan.operations == [] and plan.deprovisioned == []


def test_unowned_and_protected_users_are_never_touched() -> None:
    current = bb([("jenkins", "CI", "ci@x.io"), ("sync-admin", "Svc", "s@x.io"),
                  ("alice", "Alice A", "alice@x.io")],
                 {"devs": ["jenkins", "sync-admin", "alice"]})
    plan = plan_changes(PlanInput(desired([ALICE], {"devs": ["alice"]}), current,
                                  {"u1": "alice"}, protected_users=["sync-admin"]))
    # jenkins is not anchored, but devs is a managed group: only its membership goes.
    assert [(op.kind, op.target) for op in plan.operations] == [
        (OpKind.REMOVE_MEMBERSHIP, "jenkins")]
    assert plan.deprovisioned == []


def test_anchored_name_is_not_hijacked_by_another_identity() -> None:
    newcomer = DesiredUser("u9", "alice", "Another Alice", "a2@x.io", True)
    current = bb([("alice", "Alice A", "alice@x.io")], {"devs": ["alice"]})
    plan = plan_changes(PlanInput(desired([ALICE, newcomer], {"devs": ["alice"]}), current,
                                  {"u1": "alice"}))
    assert all(op.idcs_id != "u9" for op in plan.operations)


def test_read_only_directory_user_is_not_adopted() -> None:
    current = bb([], {"devs": []})
    current.users["alice"] = BitbucketUser("alice", "A", "alice@x.io", "LDAP", mutable=False)
    plan = plan_changes(PlanInput(desired([ALICE], {"devs": ["alice"]}), current, {}))
    assert plan.operations == []


def test_members_are_batched_per_request() -> None:
    users = [DesiredUser(f"u{i}", f"user{i:03d}", "U", f"u{i}@x.io", True) for i in range(250)]
    plan = plan_changes(PlanInput(desired(users, {"devs": [u.name for u in users]}), bb([]), {},
                                  members_per_request=100))
    adds = [op for op in plan.operations if op.kind is OpKind.ADD_MEMBERS]
    assert [len(op.params["users"]) for op in adds] == [100, 100, 50]


@pytest.mark.parametrize("seed", range(8))
def test_random_states_converge_in_one_plan(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"user{i}" for i in range(60)]
    people = [DesiredUser(f"id{i}", n, f"User {i}", f"{n}@x.io", rng.random() > 0.15)
              for i, n in enumerate(names)]
    groups = [f"team-{g}" for g in range(6)]
    wanted = {g: sorted(u.name for u in people if u.active and rng.random() < 0.4)
              for g in groups}
    existing = [(n.upper() if rng.random() < 0.2 else n, "Stale" if rng.random() < 0.3
                 else f"User {i}", f"{n}@x.io") for i, n in enumerate(names) if rng.random() < 0.5]
    current = bb(existing, {g: [n for n, _, _ in existing if rng.random() < 0.5]
                            for g in groups[:4]})
    anchors = {f"id{i}": n for i, n in enumerate(names) if rng.random() < 0.3
               and key(n) in current.users}
    _first, after, second = converge(PlanInput(desired(people, wanted), current, anchors))
    assert second.operations == [], [op.describe() for op in second.operations]
    for g in groups:
        got = sorted(key(m) for m in after.memberships[key(g)])
        assert got == sorted(key(m) for m in wanted[g])


def test_batches_respect_the_mapping_limit() -> None:
    users = [DesiredUser(f"u{i}", f"user{i}", "U", f"u{i}@x.io", True) for i in range(5000)]
    plan = plan_changes(PlanInput(desired(users, {}), bb([]), {}))
    assign_batches(plan.operations, batch_size=2, max_batches=100)
    refs = batch_refs("run1", plan.operations)
    assert len(refs["users"]) == 100
    assert sum(r["size"] for r in refs["users"]) == 5000
    assert refs["users"][0]["label"] == "50 × create user"
    assert refs["groups"] == []


def test_group_permission_never_shares_a_phase_with_group_creation() -> None:
    """Batches of one phase run in parallel: a permission must come after every group exists."""
    from identity_sync.planning.operations import PHASE_OF, PHASE_ORDER

    assert PHASE_ORDER.index(PHASE_OF[OpKind.SET_GROUP_PERMISSION]) > PHASE_ORDER.index(
        PHASE_OF[OpKind.CREATE_GROUP])
