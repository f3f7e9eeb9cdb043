"""What the benchmark does to the emulators' data, inside the emulator process.

IDCS: the incremental scenario's change set (new, changed, deactivated and deleted users and
membership moves, each dated ``meta.lastModified`` = now, as IDCS does) and the on-login user.
Bitbucket: a compact mark of the state before a run and the difference after it, from which the
harness computes the fewest requests that change needed (:mod:`bench.minimum`). Both run next to
the data so 100,000-user states never cross HTTP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

USER_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User"


@dataclass
class ChangeSpec:
    """How many of each change; the default makes the issue's 100 changes."""

    app_id: str
    seed: int = 7
    new: int = 25
    changed: int = 25
    deactivated: int = 10
    deleted: int = 10
    moves: int = 30

    @classmethod
    def of_total(cls, app_id: str, total: int, seed: int = 7) -> ChangeSpec:
        """``total`` changes in the default proportions (25/25/10/10/30 per hundred)."""
        parts = [round(total * p / 100) for p in (25, 25, 10, 10)]
        return cls(app_id, seed, *parts, moves=max(0, total - sum(parts)))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _granted_groups(dump: dict[str, Any], app_id: str) -> list[str]:
    """Ids of groups granted the app, in a stable order."""
    return sorted(g["grantee"]["value"] for g in dump["grants"]
                  if g["app"]["value"] == app_id and g["grantee"]["type"] == "Group")


def _members(dump: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {g["id"]: g["members"] for g in dump["groups"]}


def _dated(user: dict[str, Any], now: str, **changes: Any) -> dict[str, Any]:
    """A copy of ``user`` with ``changes`` and a new ``meta.lastModified`` (resources in the
    state are shared with the generator's constants: never edit them in place)."""
    copy = {**user, **changes, "meta": {**user["meta"], "lastModified": now}}
    if USER_EXTENSION in copy:
        copy[USER_EXTENSION] = {**copy[USER_EXTENSION], "groupMembershipLastModified": now}
    return copy


def _new_user(rng: random.Random, template: dict[str, Any], name: str, now: str
              ) -> dict[str, Any]:
    uid = f"{rng.getrandbits(128):032x}"
    given, family = name.split(".", 1)
    display = f"{given.title()} {family.title()}"
    return {**template, "id": uid, "userName": name, "displayName": display, "active": True,
            "ocid": f"ocid1.user.oc1..aaaaaaaabench{uid}",
            "name": {"givenName": given.title(), "familyName": family.title(),
                     "formatted": display},
            "emails": [{"value": f"{name}@example.com", "type": "work", "secondary": False,
                        "verified": True, "primary": True},
                       {"value": f"{name}@example.com", "type": "recovery", "secondary": False,
                        "verified": False, "primary": False}],
            "meta": {**template["meta"], "created": now, "lastModified": now,
                     "location": template["meta"]["location"].rsplit("/", 1)[0] + f"/{uid}"}}


def _member(user: dict[str, Any]) -> dict[str, Any]:
    return {"value": user["id"], "type": "User", "display": user["displayName"],
            "name": user["userName"]}


def apply_changes(state: Any, spec: ChangeSpec) -> dict[str, Any]:
    """Apply the change set to an ``IdcsState``; returns what was changed, by kind."""
    rng = random.Random(spec.seed)
    dump = state.to_dict()
    now = _now()
    granted = _granted_groups(dump, spec.app_id)
    members = _members(dump)
    in_granted: dict[str, list[str]] = {}
    for gid in granted:
        for m in members.get(gid, []):
            in_granted.setdefault(m["value"], []).append(gid)
    users = dump["users"]
    candidates = [i for i, u in enumerate(users) if u["active"] and u["id"] in in_granted
                  and not u["userName"].startswith("svc-")]
    picked = rng.sample(candidates, spec.changed + spec.deactivated + spec.deleted + spec.moves)
    cursor = iter(picked)
    report: dict[str, list[str]] = {k: [] for k in
                                    ("new", "changed", "deactivated", "deleted", "moves")}
    for _ in range(spec.changed):
        i = next(cursor)
        u = users[i]
        emails = [{**e, "value": f"changed.{e['value']}"} if e.get("primary") else e
                  for e in u["emails"]]
        users[i] = _dated(u, now, displayName=f"{u['displayName']} Changed",
                          emails=emails if len(report["changed"]) % 2 else u["emails"])
        report["changed"].append(u["userName"])
    for _ in range(spec.deactivated):
        i = next(cursor)
        users[i] = _dated(users[i], now, active=False)
        report["deactivated"].append(users[i]["userName"])
    deleted = set()
    for _ in range(spec.deleted):
        i = next(cursor)
        deleted.add(users[i]["id"])
        report["deleted"].append(users[i]["userName"])
    for _ in range(spec.moves):
        i = next(cursor)
        u = users[i]
        source = rng.choice(in_granted[u["id"]])
        targets = [g for g in granted if g not in in_granted[u["id"]]]
        if not targets:
            continue
        target = rng.choice(targets)
        members[source][:] = [m for m in members[source] if m["value"] != u["id"]]
        users[i] = _dated(u, now)
        members[target].append(_member(users[i]))
        report["moves"].append(f"{u['userName']}: {source} -> {target}")
    template = next(u for u in users if u["userType"] == "Employee")
    for n in range(spec.new):
        user = _new_user(rng, template, f"bench.new{spec.seed}x{n}", now)
        users.append(user)
        for gid in rng.sample(granted, min(len(granted), rng.randint(1, 3))):
            members[gid].append(_member(user))
        report["new"].append(user["userName"])
    dump["users"] = [u for u in users if u["id"] not in deleted]
    state.load_dict(dump)  # drops members that point at deleted users, like IDCS does
    return {"counts": {k: len(v) for k, v in report.items()}, **report}


def add_login_user(state: Any, seed: int, app_id: str) -> dict[str, Any]:
    """One new user in two granted groups: what the on-login sync must create."""
    rng = random.Random(seed)
    dump = state.to_dict()
    members = _members(dump)
    template = next(u for u in dump["users"] if u["userType"] == "Employee")
    user = _new_user(rng, template, f"login.user{seed}", _now())
    dump["users"].append(user)
    groups = rng.sample(_granted_groups(dump, app_id), 2)
    for gid in groups:
        members[gid].append(_member(user))
    state.load_dict(dump)
    return {"userName": user["userName"], "groups": groups}


def idcs_summary(state: Any, app_id: str | None) -> dict[str, Any]:
    """Sizes the IDCS minimum depends on (listings are ``ceil(n / 1000)`` pages)."""
    grants = [g for g in state.grants if app_id is None or g["app"]["value"] == app_id]
    group_grants = [g for g in grants if g["grantee"]["type"] == "Group"]
    derived = sum(len(state.member_ids(g["grantee"]["value"])) for g in group_grants)
    return {"users": len(state.users), "groups": len(state.groups),
            "memberships": sum(len(m) for m in state.members.values()),
            "app_grants": len(grants), "app_grants_with_derived": len(grants) + derived}


# ---- Bitbucket: mark the state before a run, diff after it -----------------------------------

def compact_bitbucket(state: Any) -> dict[str, Any]:
    data = state.to_dict()
    return {
        "users": {u["id"]: (u["name"], u["displayName"], u["emailAddress"])
                  for u in data["users"]},
        "groups": {g["name"].lower() for g in data["groups"]},
        "memberships": {g.lower(): {n.lower() for n in names}
                        for g, names in data["memberships"].items()},
        "group_permissions": {g.lower(): p for g, p in data["group_permissions"].items()},
        "user_permissions": {u.lower(): p for u, p in data["user_permissions"].items()},
    }


def bitbucket_summary(state: Any, before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sizes of the state now and, given the mark ``before``, what changed since."""
    now = compact_bitbucket(state)
    sizes = {"users": len(now["users"]), "groups": len(now["groups"]),
             "group_permissions": len(now["group_permissions"]),
             "user_permissions": len(now["user_permissions"]),
             "members": {g: len(m) for g, m in now["memberships"].items()},
             "group_names": sorted(now["groups"]),
             "permission_groups": sorted(now["group_permissions"])}
    if before is None:
        return {"sizes": sizes}
    old_users, new_users = before["users"], now["users"]
    created = [i for i in new_users if i not in old_users]
    deleted = [i for i in old_users if i not in new_users]
    renamed = [i for i in new_users if i in old_users
               and new_users[i][0] != old_users[i][0]]
    updated = [i for i in new_users if i in old_users
               and new_users[i][1:] != old_users[i][1:]]
    added: dict[str, list[str]] = {}
    removed = 0
    for group in now["groups"] | before["groups"]:
        was = before["memberships"].get(group, set())
        is_ = now["memberships"].get(group, set())
        if is_ - was:
            added[group] = sorted(is_ - was)
        removed += len(was - is_) if group in now["groups"] else 0
    perms_set = sum(1 for g, p in now["group_permissions"].items()
                    if before["group_permissions"].get(g) != p)
    perms_revoked = sum(1 for u in before["user_permissions"]
                        if u not in now["user_permissions"])
    return {"sizes": sizes, "diff": {
        "users_created": len(created), "users_deleted": len(deleted),
        "users_renamed": len(renamed), "users_updated": len(updated),
        "groups_created": len(now["groups"] - before["groups"]),
        "groups_deleted": len(before["groups"] - now["groups"]),
        "group_permissions_set": perms_set, "user_permissions_revoked": perms_revoked,
        "memberships_added": sum(len(v) for v in added.values()),
        "memberships_removed": removed,
        "membership_add_calls_min": min_star_cover(added),
        "membership_add_groups": len(added),
    }}


def min_star_cover(added: dict[str, list[str]]) -> int:
    """Fewest add calls for these additions when one call adds many users to one group
    (``groups/add-users``) or one user to many groups (``users/add-groups``): each call covers
    a star of the bipartite membership graph, so the minimum is its minimum vertex cover, which
    equals its maximum matching (König). Kuhn's augmenting paths from the group side, after a
    greedy pass that already matches nearly every group."""
    match_user: dict[str, str] = {}
    match_group: dict[str, str] = {}
    for group, users in added.items():
        for user in users:
            if user not in match_user:
                match_user[user], match_group[group] = group, user
                break
    for group in added:
        if group not in match_group:
            _augment(group, added, match_user, match_group)
    return len(match_group)


def _augment(root: str, added: dict[str, list[str]], match_user: dict[str, str],
             match_group: dict[str, str]) -> bool:
    """One augmenting path from ``root`` (iterative depth-first search)."""
    parent: dict[str, tuple[str, str | None]] = {}  # user -> (group reached from, prev user)
    seen_groups = {root}
    stack: list[tuple[str, str | None]] = [(root, None)]
    while stack:
        group, via = stack.pop()
        for user in added[group]:
            if user in parent:
                continue
            parent[user] = (group, via)
            owner = match_user.get(user)
            if owner is None:  # free user: flip the path back to the root
                node: str | None = user
                while node is not None:
                    g, prev = parent[node]
                    match_user[node], match_group[g] = g, node
                    node = prev
                return True
            if owner not in seen_groups:
                seen_groups.add(owner)
                stack.append((owner, user))
    return False
