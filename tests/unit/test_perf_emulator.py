"""The Bitbucket emulator's writes must not cost O(state) when no licence limit is set (issue
10: every create and add-users ranked every user and copied the whole state, so a cold sync of
100,000 users was quadratic in the emulator). Structural: the O(state) helpers must not run.
"""

from __future__ import annotations

import random

import pytest

from identity_sync.emulators.bitbucket_state import (
    LICENSED,
    PERMISSIONS,
    SYSADMIN_USER,
    BitbucketError,
    BitbucketState,
)


def _forbid(monkeypatch: pytest.MonkeyPatch, state: BitbucketState, *names: str) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("O(state) work on a write without a licence limit")

    for name in names:
        monkeypatch.setattr(state, name, refuse)


def test_writes_without_a_licence_limit_skip_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    state = BitbucketState()
    assert state.license_limit is None
    admin = state.user(SYSADMIN_USER)
    state.create_group("devs")
    state.set_group_permission(admin, ["devs"], "LICENSED_USER")  # rare: may snapshot
    _forbid(monkeypatch, state, "licensed_ids", "_snapshot")
    state.create_user("alice", "Alice", "alice@example.com", None, add_to_default=True)
    state.add_memberships(admin, ["alice"], ["devs"])
    alice = state.user("alice")
    assert alice.id in state.members_of(state.group("devs"))
    assert state.rank(alice) == LICENSED


def test_the_limit_is_still_enforced_and_rolled_back() -> None:
    state = BitbucketState()
    admin = state.user(SYSADMIN_USER)
    state.create_group("devs")
    state.set_group_permission(admin, ["devs"], "LICENSED_USER")
    state.license_limit = len(state.licensed_ids()) + 1
    for name in ("a", "b"):
        state.create_user(name, name.upper(), f"{name}@example.com", None, add_to_default=False)
    state.add_memberships(admin, ["a"], ["devs"])
    with pytest.raises(BitbucketError) as err:
        state.add_memberships(admin, ["b"], ["devs"])
    assert err.value.status == 403
    assert state.user("b").id not in state.members_of(state.group("devs"))
    assert state.user("a").id in state.members_of(state.group("devs"))


def test_licensed_ids_match_the_effective_rank_of_every_user() -> None:
    """``licensed_ids`` is gathered from the grants now; it must equal the definition."""
    rnd = random.Random(7)
    state = BitbucketState()
    admin = state.user(SYSADMIN_USER)
    groups = [f"g{i}" for i in range(6)]
    for group in groups:
        state.create_group(group)
    for i in range(60):
        state.create_user(f"u{i}", f"U{i}", f"u{i}@example.com", None,
                          add_to_default=rnd.random() < 0.5)
        state.add_memberships(admin, [f"u{i}"], rnd.sample(groups, rnd.randrange(3)))
        if rnd.random() < 0.2:
            state.user_perms[state.user(f"u{i}").id] = rnd.choice(PERMISSIONS[:3])
    for group in groups[:3]:
        state.group_perms[group] = rnd.choice(PERMISSIONS[:3])
    state.delete_user(admin, "u3")
    expected = {u.id for u in state.users.values() if state.rank(u) >= LICENSED}
    assert state.licensed_ids() == expected
    assert expected  # the scenario licenses somebody


def test_group_listing_order_is_the_user_listing_order() -> None:
    state = BitbucketState()
    admin = state.user(SYSADMIN_USER)
    state.create_group("devs")
    for name in ("zed", "Bob", "alice", "bob2", "Carol"):
        state.create_user(name, name, f"{name}@example.com", None, add_to_default=False)
    state.add_memberships(admin, ["zed", "alice", "Carol", "Bob"], ["devs"])
    ids = state.members_of(state.group("devs"))
    assert state.sorted_members(ids) == [u for u in state.sorted_users() if u.id in ids]
    assert [u.name for u in state.sorted_members(ids)] == ["alice", "Bob", "Carol", "zed"]
    # The id index behind it is a cache: deletes, creates and renames must show at once.
    state.delete_user(admin, "zed")
    state.create_user("zed", "New Zed", "zed2@example.com", None, add_to_default=False)
    state.rename_user(admin, "alice", "aaron")
    state.add_memberships(admin, ["zed"], ["devs"])
    ids = state.members_of(state.group("devs"))
    members = state.sorted_members(ids)
    assert members == [u for u in state.sorted_users() if u.id in ids]
    assert [(u.name, u.display_name) for u in members] == [
        ("aaron", "alice"), ("Bob", "Bob"), ("Carol", "Carol"), ("zed", "New Zed")]
