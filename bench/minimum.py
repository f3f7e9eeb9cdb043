"""The fewest requests the two APIs allow for a run, and the physical time bound they imply.

Computed from the data (emulator sizes before the run, and what changed in Bitbucket during
it), never from what the client did, so a wasteful client shows up as a ratio above 1. The
model, per API (``P(n) = max(1, ceil(n / 1000))``: both APIs page at most 1000 items):

IDCS
  token 1; full extract: users ``P(U)`` + groups ``P(G)`` + the app's direct grants ``P(g)``
  (group and user grants: memberships come with the users, so derived grants are not needed);
  incremental: changed users ``P(c)`` + an id-only listing ``P(U)`` (SCIM has no tombstones, so
  deletions are found by id difference) + ``min(c, P(g))`` scope checks; on-login: one user
  lookup + one scope check. Group display names ride on the users' ``groups`` attribute.
Bitbucket reads
  full: users ``P(u)`` + groups ``P(n)`` + group permissions + user permissions + ``P(members)``
  of every existing group the rules manage or that holds a permission; a subset of ``k`` users:
  ``2k`` (the user, their groups) + groups + both permission listings, whichever is smaller.
Bitbucket writes (from the before/after difference)
  one per user created, updated, renamed or deleted, per group created or deleted, per group
  permission set and user permission revoked, per membership removed (no batch call exists),
  and for additions the minimum vertex cover of the added memberships: ``groups/add-users``
  takes many users for one group and ``users/add-groups`` many groups for one user, and the API
  documents no list limit.

The bound: ``max(IDCS, Bitbucket reads) × latency ÷ connections + Bitbucket writes × latency ÷
connections`` (writes need the finished diff; the two extracts may overlap), or with the rate
limiter on, at least ``(Bitbucket minimum − bucket capacity) ÷ fill rate``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

PAGE = 1000


def pages(n: int) -> int:
    return max(1, math.ceil(n / PAGE))


@dataclass
class Minimum:
    idcs: dict[str, int] = field(default_factory=dict)
    bitbucket_reads: dict[str, int] = field(default_factory=dict)
    bitbucket_writes: dict[str, int] = field(default_factory=dict)

    @property
    def idcs_total(self) -> int:
        return sum(self.idcs.values())

    @property
    def bitbucket_read_total(self) -> int:
        return sum(self.bitbucket_reads.values())

    @property
    def bitbucket_write_total(self) -> int:
        return sum(self.bitbucket_writes.values())

    @property
    def total(self) -> int:
        return self.idcs_total + self.bitbucket_read_total + self.bitbucket_write_total

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "idcs_total": self.idcs_total,
                "bitbucket_read_total": self.bitbucket_read_total,
                "bitbucket_write_total": self.bitbucket_write_total, "total": self.total}


def idcs_minimum(kind: str, idcs: dict[str, Any], changed: int = 0) -> dict[str, int]:
    """``kind``: ``full``, ``incremental`` or ``login``; ``idcs`` is the emulator summary."""
    if kind == "full":
        return {"token": 1, "users": pages(idcs["users"]), "groups": pages(idcs["groups"]),
                "grants": pages(idcs["app_grants"])}
    if kind == "incremental":
        return {"token": 1, "changed users": pages(changed), "user ids": pages(idcs["users"]),
                "scope": min(changed, pages(idcs["app_grants"]))}
    return {"token": 1, "user": 1, "scope": 1}


def bitbucket_read_minimum(sizes: dict[str, Any], groups_to_read: list[str],
                           subset_users: int | None = None) -> dict[str, int]:
    """Reads against the state *before* the run (``sizes`` from the emulator summary)."""
    members = sizes["members"]
    existing = {g.lower() for g in sizes.get("group_names", [])} or None
    wanted = {g.lower() for g in groups_to_read} | set(sizes.get("permission_groups", []))
    member_pages = sum(pages(members.get(g, 0)) for g in wanted
                       if existing is None or g in existing)
    common = {"groups": pages(sizes["groups"]),
              "group permissions": pages(sizes["group_permissions"]),
              "user permissions": pages(sizes["user_permissions"])}
    full = {"users": pages(sizes["users"]), **common, "group members": member_pages}
    if subset_users is None:
        return full
    subset = {"users and their groups": 2 * subset_users, **common}
    return subset if sum(subset.values()) < sum(full.values()) else full


WRITE_KEYS = ("users_created", "users_updated", "users_renamed", "users_deleted",
              "groups_created", "groups_deleted", "group_permissions_set",
              "user_permissions_revoked", "memberships_removed", "membership_add_calls_min")


def bitbucket_write_minimum(diff: dict[str, int]) -> dict[str, int]:
    return {k: int(diff.get(k, 0)) for k in WRITE_KEYS if diff.get(k)}


@dataclass(frozen=True)
class Limits:
    latency: float  # seconds per request
    connections: int = 8  # allowed concurrency per API
    rate_capacity: float | None = None  # Bitbucket's bucket when the limiter is on
    rate_fill: float | None = None


def bound_seconds(minimum: Minimum, limits: Limits) -> float:
    per = limits.latency / limits.connections
    bound = (max(minimum.idcs_total, minimum.bitbucket_read_total) * per
             + minimum.bitbucket_write_total * per)
    if limits.rate_fill:
        bitbucket = minimum.bitbucket_read_total + minimum.bitbucket_write_total
        bound = max(bound, max(0.0, bitbucket - (limits.rate_capacity or 0)) / limits.rate_fill)
    return bound
