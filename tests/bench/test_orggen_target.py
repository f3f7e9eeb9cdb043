"""The generator's ``memberships`` target, which the benchmark scenarios rely on."""

from __future__ import annotations

import pytest

from identity_sync.emulators.orggen import generate_idcs_org


def _memberships(org: dict) -> int:
    return sum(len(g["members"]) for g in org["groups"])


@pytest.mark.parametrize(("users", "groups", "target"), [(500, 40, 5_000), (400, 60, 8_000)])
def test_memberships_land_near_the_target(users: int, groups: int, target: int) -> None:
    org = generate_idcs_org(3, users, groups, memberships=target)
    assert abs(_memberships(org) - target) <= 0.1 * target
    # Without a target the skewed draw gives far fewer (about 2 per user).
    assert _memberships(generate_idcs_org(3, users, groups)) < 0.5 * target


def test_target_keeps_determinism_and_the_default_output() -> None:
    a = generate_idcs_org(5, 200, 20, memberships=1_000)
    assert a == generate_idcs_org(5, 200, 20, memberships=1_000)
    assert generate_idcs_org(5, 200, 20, memberships=None) == generate_idcs_org(5, 200, 20)
    with pytest.raises(ValueError):
        generate_idcs_org(5, 10, 2, memberships=-1)
