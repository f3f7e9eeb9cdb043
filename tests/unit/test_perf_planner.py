"""The planner's cost must not grow as users × memberships (issue 10: a no-op plan of 8,000
users took 20 s because each user was looked up by rebuilding every group's member set).

Structural, not timed: the membership maps and the user map are wrapped in dicts that count
full passes over them; the count must not depend on the number of users.
"""

from __future__ import annotations

from typing import Any

from identity_sync.model import BitbucketState, BitbucketUser, DesiredState, DesiredUser, key
from identity_sync.planning.operations import OpKind
from identity_sync.planning.planner import PlanInput, plan_changes

GROUPS = 5


class CountingDict(dict):
    """A dict that counts how often it is walked as a whole."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.passes = 0

    def values(self):  # type: ignore[override]
        self.passes += 1
        return super().values()

    def items(self):  # type: ignore[override]
        self.passes += 1
        return super().items()

    def __iter__(self):  # type: ignore[override]
        self.passes += 1
        return super().__iter__()


def _org(users: int, *, adopt_by_email: bool = False) -> tuple[PlanInput, list[CountingDict]]:
    """``users`` anchored, existing users, every one in every group, plus one leaver and one
    inactive-then-active user, so reactivation, deprovisioning and membership code all run."""
    people = [DesiredUser(f"id{i}", f"user{i}", f"User {i}", f"user{i}@example.com", True)
              for i in range(users)]
    groups = [f"group{g}" for g in range(GROUPS)]
    want_members = CountingDict({g: [u.name for u in people] for g in groups})
    desired = DesiredState({u.idcs_id: u for u in people}, groups, want_members, {})
    bb_users = CountingDict({key(u.name): BitbucketUser(u.name, u.display_name, u.email)
                             for u in people})
    bb_users["leaver"] = BitbucketUser("leaver", "Leaver", "leaver@example.com")
    members = {key(g): [u.name for u in people[1:]] + ["leaver"] for g in groups}
    cur_members = CountingDict(members)  # people[0] is in no group: a reactivation candidate
    current = BitbucketState(users=bb_users, groups={key(g): g for g in groups},
                             memberships=cur_members)
    anchors = {u.idcs_id: u.name for u in people} | {"gone": "leaver"}
    if adopt_by_email:  # half the users are unanchored and match by email only
        for u in people[users // 2:]:
            anchors.pop(u.idcs_id)
            desired.users[u.idcs_id] = DesiredUser(u.idcs_id, f"new-{u.name}", u.display_name,
                                                   u.email, True)
    inp = PlanInput(desired, current, anchors,
                    adopt="username_or_email" if adopt_by_email else "username")
    return inp, [want_members, cur_members, bb_users]


def _passes(users: int, **kw: bool) -> tuple[list[int], Any]:
    inp, counted = _org(users, **kw)
    plan = plan_changes(inp)
    return [d.passes for d in counted], plan


def test_passes_over_memberships_do_not_grow_with_users() -> None:
    small, small_plan = _passes(20)
    large, large_plan = _passes(200)
    assert small == large
    # The scenario really exercises the indexed paths: a reactivation and a deprovisioning.
    for plan in (small_plan, large_plan):
        kinds = [op.kind for op in plan.operations]
        assert kinds.count(OpKind.DISABLE_USER) == 1
        assert [op.target for op in plan.operations
                if op.kind is OpKind.REACTIVATE_USER] == ["user0"]
        disable = next(op for op in plan.operations if op.kind is OpKind.DISABLE_USER)
        assert disable.before == {"groups": sorted(key(f"group{g}") for g in range(GROUPS))}


def test_adoption_by_email_does_not_scan_every_user_per_user() -> None:
    small, small_plan = _passes(20, adopt_by_email=True)
    large, large_plan = _passes(200, adopt_by_email=True)
    assert small == large
    for plan, users in ((small_plan, 20), (large_plan, 200)):
        adopted = [op for op in plan.operations if op.kind is OpKind.ADOPT_USER]
        assert len(adopted) == users - users // 2
        renames = [op for op in plan.operations if op.kind is OpKind.RENAME_USER]
        assert {op.params["newName"] for op in renames} == {f"new-user{i}"
                                                            for i in range(users // 2, users)}


def test_a_group_needed_twice_is_created_once() -> None:
    """Missing groups are remembered when created: the membership pass must not create the
    same group again for new users (it used to scan every planned operation per group)."""
    user = DesiredUser("id1", "alice", "Alice", "alice@example.com", True)
    desired = DesiredState({"id1": user}, ["devs"], {"devs": ["alice"]}, {},
                           initial_groups=["devs", "newcomers"])
    plan = plan_changes(PlanInput(desired, BitbucketState(), {}))
    created = [op.target for op in plan.operations if op.kind is OpKind.CREATE_GROUP]
    assert sorted(created) == ["devs", "newcomers"]
