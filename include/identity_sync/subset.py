"""Syncing part of the organisation: named users (the on-login sync) or named IDCS groups.

A subset run extracts only those users (plus the full, cheap group list so the rules still see
every group they manage), reads only their part of Bitbucket, and restricts the plan to them:
other users' memberships are invisible to it, so it can neither add nor remove them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .bitbucket.client import BitbucketClient
from .bitbucket.state import concurrently, parse_user_entry
from .idcs.client import IdcsClient
from .idcs.extract import (
    ScopeError,
    app_grants,
    list_groups,
    parse_user,
    quote,
    resolve_app,
    user_attributes,
)
from .model import BitbucketState, BitbucketUser, IdcsSnapshot, IdcsUser, key

log = logging.getLogger(__name__)
FILTER_CHUNK = 25  # values OR'ed into one SCIM filter


@dataclass(frozen=True)
class Subset:
    users: tuple[str, ...] = ()  # IDCS userNames (compared case-insensitively)
    groups: tuple[str, ...] = ()  # IDCS group display names

    def __bool__(self) -> bool:
        return bool(self.users or self.groups)

    def to_dict(self) -> dict[str, list[str]]:
        return {"users": list(self.users), "groups": list(self.groups)}

    @classmethod
    def from_params(cls, users: Any, groups: Any) -> Subset:
        def names(value: Any) -> tuple[str, ...]:
            if not value:
                return ()
            items = value.split(",") if isinstance(value, str) else value
            return tuple(sorted({str(v).strip() for v in items if str(v).strip()}))

        return cls(names(users), names(groups))


def _any_of(attribute: str, values: list[str]) -> list[str]:
    return [" or ".join(f"{attribute} eq {quote(v)}" for v in values[i : i + FILTER_CHUNK])
            for i in range(0, len(values), FILTER_CHUNK)]


@dataclass
class SubsetExtract:
    snapshot: IdcsSnapshot
    missing_users: list[str] = field(default_factory=list)  # asked for, not in IDCS or scope


def extract_subset(client: IdcsClient, subset: Subset, *, mode: str, app_id: str | None,
                   scim_filter: str | None = None,
                   extra_attributes: list[str] | None = None) -> SubsetExtract:
    """The subset's users (by userName, or as members of the named groups), every group, and
    the scope check for just those users: one request per 25 names plus a few."""
    extra = extra_attributes or []
    attributes = user_attributes(extra)
    groups = list_groups(client)
    found: dict[str, IdcsUser] = {}

    def fetch(flt: str) -> None:
        if scim_filter and mode == "filter":
            flt = f"({flt}) and ({scim_filter})"
        for resource in client.iter_resources("/admin/v1/Users",
                                              {"attributes": attributes, "filter": flt}):
            user = parse_user(resource, extra)
            if user.id:
                found[user.id] = user

    for flt in _any_of("userName", list(subset.users)):
        fetch(flt)
    wanted_groups = {g.casefold() for g in subset.groups}
    group_ids = [g.id for g in groups if g.display_name.casefold() in wanted_groups]
    for flt in _any_of("groups.value", group_ids):
        fetch(flt)
    users = list(found.values())
    if mode == "app_grants":
        users = [u for u in users if u.id in granted_ids(client, _app(client, app_id), users)]
    seen = {u.user_name.casefold() for u in users if u.user_name}
    missing = [n for n in subset.users if n.casefold() not in seen]
    log.info("IDCS subset extract: %d users (%d named users not in IDCS scope), %d groups, "
             "%d requests", len(users), len(missing), len(groups), client.requests_made)
    scope = f"subset users={list(subset.users)} groups={list(subset.groups)}"
    return SubsetExtract(IdcsSnapshot(users, groups, scope, total_users_seen=len(users)), missing)


def _app(client: IdcsClient, app_id: str | None) -> str:
    if not app_id:
        raise ScopeError("scope mode app_grants needs the IDCS App id (connection extra app_id)")
    return resolve_app(client, app_id)


def granted_ids(client: IdcsClient, app_id: str, users: list[IdcsUser]) -> set[str]:
    """Which of ``users`` hold the App, directly or through a group, by the cheaper way: one
    count request per user (IDCS derives a GROUP_MEMBERSHIP grant per member) for a single
    user, else the App's direct grants (usually one page) checked against memberships."""
    if not users:
        return set()
    if len(users) == 1:
        user = users[0]
        flt = f"app.value eq {quote(app_id)} and grantee.value eq {quote(user.id or '')}"
        return {user.id or ""} if client.count("/admin/v1/Grants", flt) > 0 else set()
    grants = app_grants(client, app_id)
    return {u.id or "" for u in users if grants.covers(u)}


def read_subset_state(client: BitbucketClient, names: list[str],
                      groups_to_read: list[str]) -> BitbucketState:
    """Bitbucket as far as ``names`` are concerned: those users, every group name, their own
    memberships (read from the user's side), and permissions."""
    if _needs_preflight(client, len(names)):
        client.preflight()  # pace to the server's limit (or none), as the full read does
    state = BitbucketState()
    for user in concurrently(client, client.find_user, list(names)):
        if user is not None:
            state.users[key(user["name"])] = parse_user_entry(user)
    for group in client.list_groups():
        state.groups[key(group)] = group
    for entry in client.group_permissions():
        state.group_permissions[key(entry["group"]["name"])] = entry["permission"]
    readable = {key(g) for g in groups_to_read} | set(state.group_permissions)
    state.memberships = {g: [] for g in readable if g in state.groups}
    users = list(state.users.values())

    def groups_of(user: BitbucketUser) -> list[str]:
        return [g["name"] for g in client.iter_pages("/admin/users/more-members",
                                                     {"context": user.name})]

    def permissions_of(user: BitbucketUser) -> list[str]:
        return [e["permission"] for e in client.iter_pages("/admin/permissions/users",
                                                           {"filter": user.name})
                if key(e["user"]["name"]) == key(user.name)]

    for user, groups in zip(users, concurrently(client, groups_of, users), strict=True):
        for group in groups:
            if key(group) in state.memberships:
                state.memberships[key(group)].append(user.name)
    for user, permissions in zip(users, concurrently(client, permissions_of, users), strict=True):
        for permission in permissions:
            state.user_permissions[key(user.name)] = permission
    log.info("Bitbucket subset state: %d of %d users found, %d requests", len(state.users),
             len(names), client.requests_made)
    return state


def _needs_preflight(client: BitbucketClient, names: int) -> bool:
    """Whether to learn the server's pace first: without it the client keeps Bitbucket's
    default (95 % of 5 requests/s), which made an incremental read of 100 users take 44 s (issue
    10). A read that fits in the client's initial burst (an on-login sync: about ten
    requests) is not slowed by it, and preflight would only add its own requests."""
    limiter = getattr(client.transport, "limiter", None)
    reads = 3 * names + 2  # find, groups and permissions per user; group list and permissions
    return limiter is not None and reads > limiter.capacity


def restrict_anchors(anchors: dict[str, str], snapshot: IdcsSnapshot,
                     subset: Subset) -> dict[str, str]:
    """Anchors of the subset: its IDCS users, plus named users IDCS no longer returns."""
    ids = {u.id for u in snapshot.users}
    named = {n.casefold() for n in subset.users}
    return {i: n for i, n in anchors.items() if i in ids or n.casefold() in named}


@dataclass
class Changes:
    """An incremental extract: the subset to sync, and what deletion detection found."""

    subset: Subset
    extract: SubsetExtract
    changed_ids: list[str]  # users modified since the watermark (in scope or not)
    deleted_ids: list[str]  # ids the baseline held that IDCS no longer has
    users_total: int  # users in the base listing now
    listed_ids: bool  # True when every id was listed (no baseline, or the counts disagreed)
    app_id: str | None = None


def extract_changed(client: IdcsClient, since: str, anchors: dict[str, str], *, mode: str,
                    app_id: str | None, scim_filter: str | None = None,
                    extra_attributes: list[str] | None = None,
                    known_ids: set[str] | None = None) -> Changes:
    """An incremental extract: users IDCS modified after ``since`` (``meta.lastModified gt``),
    plus anchored users whose IDCS id is gone.

    Deletions come from an id diff against ``known_ids`` (the last full extract's ids updated
    by later runs). Every user IDCS holds now is either known or modified since the watermark,
    so when ``count(users) == len(known | changed)`` nothing was deleted and the ids need not
    be listed (one request instead of ``ceil(users/1000)``); otherwise every id is listed."""
    extra = extra_attributes or []
    listing_filter = scim_filter if mode == "filter" else None
    flt = f"meta.lastModified gt {quote(since)}"
    if listing_filter:
        flt = f"({flt}) and ({listing_filter})"
    changed = [parse_user(r, extra) for r in client.list_all(
        "/admin/v1/Users", {"attributes": user_attributes(extra), "filter": flt})]
    changed_ids = {u.id for u in changed if u.id}
    current: set[str] | None = None
    if known_ids is not None:
        expected = known_ids | changed_ids
        total = client.count("/admin/v1/Users", listing_filter)
        if total == len(expected):
            current = expected
        else:
            log.info("IDCS holds %d users, the audit store expects %d: listing every id to find "
                     "%s", total, len(expected),
                     "the deleted ones" if total < len(expected) else "users it never saw")
    listed = current is None
    if current is None:
        params = {"attributes": "id", **({"filter": listing_filter} if listing_filter else {})}
        current = {r["id"] for r in client.list_all("/admin/v1/Users", params)
                   if isinstance(r.get("id"), str)}
    deleted = sorted((known_ids or set()) - current)
    gone = sorted(name for idcs_id, name in anchors.items() if idcs_id not in current)
    groups = list_groups(client)
    users = [u for u in changed if u.id]
    resolved = None
    if mode == "app_grants":
        resolved = _app(client, app_id)
        in_scope = granted_ids(client, resolved, users)
        # A changed user who lost the grant must still be planned (deprovisioned) by name.
        gone += sorted(anchors[u.id] for u in users if u.id not in in_scope and u.id in anchors)
        users = [u for u in users if u.id in in_scope]
    subset = Subset(tuple(sorted({*(u.user_name or "" for u in users), *gone} - {""})), ())
    log.info("IDCS incremental extract since %s: %d changed users in scope, %d gone "
             "(%d deleted since the baseline, ids %s), %s", since, len(users), len(gone),
             len(deleted), "listed" if listed else "checked by count", client.metrics.describe())
    snapshot = IdcsSnapshot(users, groups, f"changed since {since}",
                            total_users_seen=len(current))
    return Changes(subset, SubsetExtract(snapshot, []), sorted(changed_ids), deleted,
                   len(current), listed, resolved)
