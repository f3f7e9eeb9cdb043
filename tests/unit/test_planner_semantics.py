"""Planner decisions for the rules' options, and hypothesis properties over random states."""

from __future__ import annotations

from typing import ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity_sync.mapping.rules import parse_rules
from identity_sync.model import BitbucketState, BitbucketUser, DesiredState, DesiredUser, key
from identity_sync.pipeline import RunOptions, safety_gate
from identity_sync.planning.operations import OpKind
from identity_sync.planning.planner import PlanInput, plan_changes

from .test_planner import bb, converge, desired, simulate

ANN = DesiredUser("u1", "ann", "Ann A", "ann@x.io", True)


def kinds(plan) -> list[tuple[str, str]]:
    return [(op.kind.value, op.target) for op in plan.operations]


def test_create_only_attributes_are_not_updated_later() -> None:
    current = bb([("ann", "Chosen by the user", "old@x.io")], {"devs": ["ann"]})
    d = desired([ANN], {"devs": ["ann"]})
    d.create_only = ["displayName"]
    first, _, second = converge(PlanInput(d, current, {"u1": "ann"}))
    assert kinds(first) == [("update_user", "ann")]
    assert first.operations[0].params == {"name": "ann", "displayName": "Chosen by the user",
                                          "email": "ann@x.io"}
    assert second.operations == []


def test_name_create_only_means_no_rename() -> None:
    current = bb([("ann", "Ann A", "ann@x.io")], {"devs": ["ann"]})
    d = desired([DesiredUser("u1", "ann.new", "Ann A", "ann@x.io", True)], {"devs": ["ann.new"]})
    d.create_only = ["name"]
    first, _, second = converge(PlanInput(d, current, {"u1": "ann"}))
    assert first.operations == [] and second.operations == []


def test_adopt_by_email_renames_to_the_idcs_name() -> None:
    current = bb([("annA", "Ann A", "ANN@x.io")], {"devs": []})
    first, after, second = converge(PlanInput(desired([ANN], {"devs": ["ann"]}), current, {},
                                              adopt="username_or_email"))
    assert kinds(first) == [("adopt_user", "annA"), ("rename_user", "annA"),
                            ("update_user", "ann"), ("add_members", "devs")]
    assert first.operations[0].reason == "existing Bitbucket user matches IDCS email"
    assert first.anchors == {"u1": "ann"} and "ann" in after.users
    assert second.operations == []


def test_adoption_off_records_a_conflict_and_changes_nothing() -> None:
    current = bb([("ann", "Ann A", "ann@x.io")], {"devs": []})
    plan = plan_changes(PlanInput(desired([ANN], {"devs": ["ann"]}), current, {}, adopt="none"))
    assert plan.operations == []
    assert plan.conflicts == [{"id": "u1", "kind": "adopt_off", "record_type": "user",
                               "reason": "Bitbucket user 'ann' exists and adoption is off"}]


def test_returning_user_is_reactivated() -> None:
    current = bb([("ann", "Ann A", "ann@x.io")], {"devs": [], "stash-users": []},
                 group_permissions={"stash-users": "LICENSED_USER"})
    first, _, second = converge(PlanInput(desired([ANN], {"devs": ["ann"]}), current,
                                          {"u1": "ann"}))
    assert kinds(first) == [("reactivate_user", "ann"), ("add_members", "devs")]
    assert second.operations == []


def test_disable_leaves_licence_groups_even_unmanaged_ones() -> None:
    gone = DesiredUser("u1", "ann", "Ann A", "ann@x.io", False)
    current = bb([("ann", "Ann A", "ann@x.io"), ("bob", "B", "b@x.io")],
                 {"devs": ["ann"], "stash-users": ["ann", "bob"]},
                 group_permissions={"stash-users": "LICENSED_USER"})
    first, after, second = converge(PlanInput(desired([gone], {"devs": []}), current,
                                              {"u1": "ann"}))
    assert kinds(first) == [("disable_user", "ann"), ("remove_membership", "ann"),
                            ("remove_membership", "ann")]
    assert first.operations[0].before == {"groups": ["devs", "stash-users"]}
    assert after.memberships["stash-users"] == ["bob"]  # bob is not ours: untouched
    assert second.operations == []


def test_moving_out_of_a_licence_group_counts_as_a_licence_loss() -> None:
    current = bb([("ann", "Ann A", "ann@x.io")], {"licensed": ["ann"], "devs": []},
                 group_permissions={"licensed": "LICENSED_USER"})
    plan = plan_changes(PlanInput(desired([ANN], {"licensed": [], "devs": ["ann"]}), current,
                                  {"u1": "ann"}))
    assert plan.licence_losses == ["ann"] and plan.deprovisioned == []


def test_additive_groups_only_gain_members_and_protected_groups_are_untouched() -> None:
    current = bb([("ann", "Ann A", "ann@x.io"), ("zed", "Z", "z@x.io")],
                 {"devs": ["zed"], "admins": ["zed", "ann"]})
    d = DesiredState({"u1": ANN}, [], {"devs": ["ann"]}, {}, additive_groups=["devs"])
    plan = plan_changes(PlanInput(d, current, {"u1": "ann"}, protected_groups=["admins"]))
    assert kinds(plan) == [("add_members", "devs")]


def test_new_user_groups_apply_at_creation_only() -> None:
    d = DesiredState({"u1": ANN, "u2": DesiredUser("u2", "bob", "B", "b@x.io", True)}, [],
                     {}, {}, initial_groups=["welcome"])
    current = bb([("bob", "B", "b@x.io")])
    plan = plan_changes(PlanInput(d, current, {"u2": "bob"}))
    assert kinds(plan) == [("create_user", "ann"), ("create_group", "welcome"),
                           ("add_members", "welcome")]
    assert plan.operations[-1].params["users"] == ["ann"]


def test_removed_groups_are_deleted_only_when_opted_in() -> None:
    current = bb([("ann", "Ann A", "ann@x.io")], {"old-team": ["ann"], "devs": ["ann"]})
    d = desired([ANN], {"devs": ["ann"]})
    off = plan_changes(PlanInput(d, current, {"u1": "ann"}, previously_managed_groups=["old-team"]))
    assert off.operations == []
    on = plan_changes(PlanInput(d, current, {"u1": "ann"}, previously_managed_groups=[
        "old-team", "stash-users"], delete_removed_groups=True, protected_groups=["stash-users"]))
    assert kinds(on) == [("delete_group", "old-team")]


class TestSafetyGate:
    rules = parse_rules("safety: {max_deprovision: 2, max_deprovision_percent: 50, "
                        "max_shrink_percent: 20}\n")
    snapshot: ClassVar = {"total_users_seen": 10, "users": [{}] * 10}

    def plan(self, leaving: int):
        users = [DesiredUser(f"u{i}", f"user{i}", "U", f"u{i}@x.io", i >= leaving)
                 for i in range(10)]
        current = bb([(u.name, "U", u.email) for u in users], {"devs": [u.name for u in users]})
        anchors = {u.idcs_id: u.name for u in users}
        return plan_changes(PlanInput(desired(users, {"devs": [u.name for u in users[leaving:]]}),
                                      current, anchors)), anchors

    def test_under_the_limit_passes(self) -> None:
        plan, anchors = self.plan(2)
        assert safety_gate(self.rules, plan, len(anchors), self.snapshot, {"users_in_scope": 10},
                           RunOptions()) is None

    def test_over_the_limit_stops_with_one_line(self) -> None:
        plan, anchors = self.plan(3)
        previous = {"users_in_scope": 10}
        reason = safety_gate(self.rules, plan, len(anchors), self.snapshot, previous,
                             RunOptions())
        assert reason.startswith("plan takes access from 3 users (30.0% of 10 managed users: "
                                 "3 deprovisioned)")
        assert "\n" not in reason

    def test_shrunken_extract_stops(self) -> None:
        plan, anchors = self.plan(0)
        previous = {"counts": {"extract": {"users": 20}}}
        reason = safety_gate(self.rules, plan, len(anchors), self.snapshot, previous, RunOptions())
        assert reason.startswith("the IDCS extract shrank from 20 to 10 users in scope (50.0%")

    def test_empty_extract_stops(self) -> None:
        plan, anchors = self.plan(0)
        reason = safety_gate(self.rules, plan, len(anchors), {"total_users_seen": 0, "users": []},
                             None, RunOptions())
        assert reason.startswith("IDCS returned 0 users")


# -- hypothesis: random worlds --------------------------------------------------------------------
NAMES = [f"user{i}" for i in range(12)]
GROUPS = ["alpha", "beta", "gamma"]


@st.composite
def worlds(draw: st.DrawFn) -> PlanInput:
    people = [DesiredUser(f"id{i}", draw(st.sampled_from([n, n.upper()])), f"U{i}",
                          f"{n}@x.io", draw(st.booleans()))
              for i, n in enumerate(NAMES) if draw(st.booleans())]
    wanted = {g: sorted({u.name for u in people if u.active and draw(st.booleans())})
              for g in GROUPS[:2]}
    existing = [(n, draw(st.sampled_from(["U", "Stale"])), f"{n}@x.io")
                for n in NAMES if draw(st.booleans())] + [("svc", "Service", "svc@x.io")]
    members = {g: [n for n, _, _ in existing if draw(st.booleans())] for g in GROUPS}
    current = bb(existing, members, group_permissions={"gamma": "LICENSED_USER"},
                 user_permissions={key(n): "LICENSED_USER" for n, _, _ in existing
                                   if draw(st.booleans())})
    anchors = {f"id{i}": n for i, n in enumerate(NAMES)
               if key(n) in current.users and draw(st.booleans())}
    return PlanInput(desired(people, wanted), current, anchors, protected_users=["svc"],
                     deprovision=draw(st.sampled_from(["disable", "delete", "keep"])),
                     adopt=draw(st.sampled_from(["username_and_email", "username",
                                                 "username_or_email", "none"])))


def owned(inp: PlanInput, state: BitbucketState) -> dict[str, BitbucketUser]:
    anchored = {key(n) for n in inp.anchors.values()}
    return {k: u for k, u in state.users.items() if k not in anchored}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_plans_converge_and_stay_in_their_lane(inp: PlanInput) -> None:
    first = plan_changes(inp)
    after = simulate(inp.current, first)
    again = plan_changes(PlanInput(inp.desired, after, first.anchors, inp.deprovision,
                                   inp.protected_users, inp.members_per_request, inp.adopt))
    assert again.operations == [], [op.describe() for op in again.operations]
    # Managed groups hold exactly the wanted members who could be placed.
    placed = {key(n) for n in first.anchors.values()}
    for group, wanted in inp.desired.memberships.items():
        got = {key(m) for m in after.memberships.get(key(group), [])}
        assert {key(first.anchors[u.idcs_id]) for u in inp.desired.users.values()
                if u.name in wanted and u.idcs_id in first.anchors} == got & placed
    # The protected service account is never touched, in any field or group.
    assert after.users["svc"] == inp.current.users["svc"]
    for group, members in inp.current.memberships.items():
        assert ("svc" in members) == ("svc" in after.memberships.get(group, []))
    # Users nobody anchored and nobody adopted keep their details.
    adopted = {key(op.target) for op in first.operations if op.kind is OpKind.ADOPT_USER}
    for k, u in owned(inp, inp.current).items():
        if k not in adopted:
            assert after.users.get(k) == u
