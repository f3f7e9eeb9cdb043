"""Extract the IDCS users, groups and memberships in scope with the fewest requests.

Scope modes: every user (``all``); users granted an IDCS App, directly or through a granted group
(``app_grants``: the App ``id``, or its display name resolved through ``/admin/v1/Apps``); or a
SCIM ``filter``. Memberships come from the cheaper side, chosen per run and logged
(:func:`choose_memberships`): the users' ``groups`` attribute costs nothing extra when every user
is listed anyway, so a full extract is ``1 + ceil(users/1000) + ceil(groups/1000)
[+ ceil(direct grants/1000)]`` requests; per-group member pages (``members[startIndex=S&count=C]``,
correct for groups over 10,000 members, plus one member count per group to check them against)
win only when few users are listed but many groups.

Parsing never trusts the shape of a resource: a wrong JSON type becomes a missing value that the
data-quality gate then quarantines with a reason, instead of a crash with a traceback.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..model import IdcsGroup, IdcsSnapshot, IdcsUser
from .client import MAX_PAGE, MEMBER_PAGE, IdcsClient

log = logging.getLogger(__name__)

USER_EXTENSION = "urn:ietf:params:scim:schemas:oracle:idcs:extension:user:User"
ALL_USERS_GROUP_ID = "AllUsersId"
PRIMARY_EMAILS = "_dq_primary_emails"  # in IdcsUser.extra, only when several are marked primary
BASE_USER_ATTRIBUTES = ["userName", "displayName", "name", "emails", "active",
                        f"{USER_EXTENSION}:isFederatedUser"]
# Only each group's id: ``display``, ``$ref`` and ``ocid`` would make a user page ~5x larger.
GROUPS_ATTRIBUTE = "groups.value"
USER_ATTRIBUTES = ",".join([*BASE_USER_ATTRIBUTES, GROUPS_ATTRIBUTE])
APP_ID = re.compile(r"^[0-9a-fA-F]{32}$")
DERIVED = "GROUP_MEMBERSHIP"  # grants IDCS derives per member of a granted group
Strategy = Literal["auto", "user_side", "group_side"]


class ScopeError(ValueError):
    """The configured scope cannot be resolved (no such App, an ambiguous App name...)."""


def _text(value: Any) -> str | None:
    """A string attribute as text; numbers are stringified, other JSON types count as missing."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def primary_email(emails: list[dict[str, Any]] | None) -> str | None:
    """The primary address, else the work address, else the first (never the recovery one)."""
    emails = _dicts(emails)
    for test in (lambda e: e.get("primary"), lambda e: e.get("type") == "work",
                 lambda e: e.get("type") != "recovery"):
        for email in emails:
            if test(email) and _text(email.get("value")):
                return _text(email["value"])
    return None


def primary_emails(emails: Any) -> list[str]:
    """Distinct addresses marked primary (more than one makes the primary ambiguous)."""
    values = (_text(e.get("value")) for e in _dicts(emails) if e.get("primary") is True)
    return list(dict.fromkeys(v for v in values if v))


def resolve_path(resource: dict[str, Any], path: str) -> Any:
    """The value of an IDCS attribute path (``title``, ``name.middleName``, an extension URN
    followed by ``:attr``); a multi-valued attribute gives the list of its ``value``s."""
    node: Any = resource
    if path.startswith("urn:"):
        urn, _, attribute = path.rpartition(":")
        node = resource.get(urn) or {}
        path = attribute
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    if isinstance(node, list):
        return [v.get("value") if isinstance(v, dict) else v for v in node]
    return node


def parse_user(resource: dict[str, Any], extra: list[str] | None = None) -> IdcsUser:
    name = resource.get("name")
    name = name if isinstance(name, dict) else {}
    ext = resource.get(USER_EXTENSION)
    values = {path: resolve_path(resource, path) for path in extra or []}
    primaries = primary_emails(resource.get("emails"))
    if len(primaries) > 1:
        values[PRIMARY_EMAILS] = primaries
    return IdcsUser(
        id=_text(resource.get("id")) or None,
        user_name=_text(resource.get("userName")),
        display_name=_text(resource.get("displayName")),
        given_name=_text(name.get("givenName")),
        family_name=_text(name.get("familyName")),
        email=primary_email(resource.get("emails")),
        active=bool(resource.get("active", True)),
        federated=bool((ext if isinstance(ext, dict) else {}).get("isFederatedUser", False)),
        group_ids=tuple(
            gid for g in _dicts(resource.get("groups"))
            if (gid := _text(g.get("value"))) and gid != ALL_USERS_GROUP_ID
        ),
        extra=values,
    )


@dataclass
class Grants:
    """Who holds an App directly: users, and groups (whose members hold it through them)."""

    app_id: str
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)

    def covers(self, user: IdcsUser) -> bool:
        """Granted directly, through a group, or through the built-in All Tenant Users group
        (which is never among a user's parsed group ids)."""
        return (user.id in self.users or ALL_USERS_GROUP_ID in self.groups
                or bool(self.groups.intersection(user.group_ids)))


def resolve_app(client: IdcsClient, app: str) -> str:
    """The App ``id`` for ``app``: an id (32 hex digits) as it is, else the one App whose
    ``displayName`` is ``app`` (``/admin/v1/Apps?filter=displayName eq ...``)."""
    app = app.strip()
    if APP_ID.match(app):
        return app
    flt = f"displayName eq {quote(app)}"
    found = client.list_all("/admin/v1/Apps", {"filter": flt,
                                               "attributes": "id,displayName,name"})
    if not found:
        raise ScopeError(f"no IDCS App is named {app!r}: set the connection's app_id to the App "
                         "id (Applications > the app > its id, 32 hex digits) or its exact name")
    if len(found) > 1:
        ids = ", ".join(str(a.get("id")) for a in found)
        raise ScopeError(f"{len(found)} IDCS Apps are named {app!r} ({ids}): set the "
                         "connection's app_id to the id of the right one")
    app_id = str(found[0].get("id") or "")
    log.info("IDCS App %r resolved to id %s", app, app_id)
    return app_id


def app_grants(client: IdcsClient, app_id: str) -> Grants:
    """The App's direct grants only: derived GROUP_MEMBERSHIP grants (one per member of each
    granted group) are recomputed from memberships, which costs no requests."""
    grants = Grants(app_id)
    flt = f"app.value eq {quote(app_id)} and grantMechanism ne {quote(DERIVED)}"
    for grant in client.list_all("/admin/v1/Grants", {"filter": flt,
                                                      "attributes": "grantee,grantMechanism"}):
        grantee = grant.get("grantee")
        if not isinstance(grantee, dict) or not isinstance(grantee.get("value"), str):
            log.warning("IDCS grant %s has no grantee; it grants nobody", grant.get("id"))
            continue
        kind = grantee.get("type")
        if kind == "User":
            grants.users.add(grantee["value"])
        elif kind == "Group":
            grants.groups.add(grantee["value"])
        else:  # App, DynamicResourceGroup: not people
            log.info("IDCS grant %s to a %s is not a user or group grant; ignored",
                     grant.get("id"), kind)
    if not grants.users and not grants.groups:
        log.warning("IDCS App %s has no user or group grants: nobody is in scope (is app_id the "
                    "App id, not its OAuth client id?)", app_id)
    return grants


def quote(value: str) -> str:
    """A SCIM filter string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attribute_roots(paths: list[str]) -> list[str]:
    """What to ask IDCS for so that each path comes back (sub-attributes ask for their parent)."""
    return [p.rpartition(":")[0] + ":" + p.rpartition(":")[2].split(".")[0]
            if p.startswith("urn:") else p.split(".")[0] for p in paths]


def user_attributes(extra: list[str], *, groups: bool = True) -> str:
    """The ``attributes`` projection for users: what the sync always needs plus the rules' own
    (and ``groups`` when memberships come from the users' side)."""
    base = [*BASE_USER_ATTRIBUTES, *([GROUPS_ATTRIBUTE] if groups else [])]
    return ",".join([*base, *sorted(set(_attribute_roots(extra)) - set(base))])


def list_groups(client: IdcsClient) -> list[IdcsGroup]:
    """Every IDCS group (without members), except the built-in All Tenant Users."""
    return [
        IdcsGroup(_text(r.get("id")) or "", _text(r.get("displayName")) or "")
        for r in client.list_all("/admin/v1/Groups", {"attributes": "displayName"})
        if r.get("id") != ALL_USERS_GROUP_ID
    ]


@dataclass(frozen=True)
class MembershipChoice:
    """Which side memberships are read from, and the request counts that decided it."""

    strategy: Literal["user_side", "group_side"]
    user_side_requests: int
    group_side_requests: int
    reason: str

    def describe(self) -> str:
        return (f"memberships from the {self.strategy.replace('_', ' ')} "
                f"(user-side groups attribute: {self.user_side_requests} extra requests, "
                f"per-group member counts and pages: {self.group_side_requests}; {self.reason})")


def choose_memberships(users: int, groups: int, *, users_listed: bool,
                       member_counts: dict[str, int] | None = None,
                       requested: Strategy = "auto") -> MembershipChoice:
    """Count the requests each side costs and take the cheaper (ties go to the user side,
    which also sees nested and dynamic memberships).

    User side: the ``groups`` attribute rides on the user pages, so it costs nothing extra when
    the users are listed anyway, else ``ceil(users/1000)``. Group side: per group, the member
    count the pages are checked against plus at least one page, ``ceil((members+1)/10000)``
    pages when the member counts are known."""
    user_side = 0 if users_listed else math.ceil(users / MAX_PAGE)
    if member_counts is not None:
        group_side = sum(1 + math.ceil((n + 1) / MEMBER_PAGE) for n in member_counts.values())
    else:
        group_side = 2 * groups
    if requested != "auto":
        return MembershipChoice(requested, user_side, group_side, "configured")
    if group_side < user_side:
        return MembershipChoice("group_side", user_side, group_side, "fewer requests")
    return MembershipChoice("user_side", user_side, group_side, "fewer or equal requests")


def group_members(client: IdcsClient, group_ids: list[str]) -> dict[str, list[str]]:
    """User id -> group ids, from each group's paged member list (checked against the member
    count IDCS reports, read again once when the membership changed meanwhile)."""
    by_user: dict[str, list[str]] = defaultdict(list)
    for gid in group_ids:
        for member in client.list_group_members(gid):
            if member.get("type", "User") == "User" and isinstance(member.get("value"), str):
                by_user[member["value"]].append(gid)
    return by_user


@dataclass
class Extract:
    """A full extract: the snapshot, plus what deletion detection and the audit need."""

    snapshot: IdcsSnapshot
    user_ids: list[str]  # every user listed (the scope's base listing), in scope or not
    memberships: MembershipChoice
    app_id: str | None = None
    memberships_count: int = 0


def extract_full(client: IdcsClient, *, mode: str = "all", app_id: str | None = None,
                 include_inactive: bool = True, scim_filter: str | None = None,
                 extra_attributes: list[str] | None = None, membership: Strategy = "auto",
                 wanted_groups: Callable[[list[IdcsGroup]], list[str]] | None = None
                 ) -> Extract:
    """Every user of the scope's base listing (all users, or the filter's), all groups, the
    App's direct grants in ``app_grants`` mode; memberships from the cheaper side (per-group
    reads cover the groups ``wanted_groups`` picks, default all)."""
    extra = extra_attributes or []
    if mode == "app_grants" and not app_id:
        raise ScopeError("scope mode app_grants needs the IDCS App id (connection extra app_id)")
    if mode == "filter" and not scim_filter:
        raise ScopeError("scope mode filter needs a SCIM filter (rules scope.filter)")
    resolved = resolve_app(client, app_id) if mode == "app_grants" and app_id else None
    grants = app_grants(client, resolved) if resolved else None
    groups = list_groups(client)
    wanted = wanted_groups(groups) if wanted_groups else [g.id for g in groups]
    if grants is not None:  # per-group reads must also cover the groups granting the App
        wanted += sorted(grants.groups - set(wanted) - {ALL_USERS_GROUP_ID})
    choice = choose_memberships(0, len(wanted), users_listed=True, requested=membership)
    log.info("IDCS extract: %s", choice.describe())
    params = {"attributes": user_attributes(extra, groups=choice.strategy == "user_side")}
    if mode == "filter":
        params["filter"] = scim_filter or ""
    all_users = [parse_user(r, extra) for r in client.list_all("/admin/v1/Users", params)]
    if choice.strategy == "group_side":
        by_user = group_members(client, wanted)
        all_users = [replace(u, group_ids=tuple(by_user.get(u.id or "", ()))) for u in all_users]
    users, scope = all_users, "all users"
    if resolved and grants is not None:
        users = [u for u in all_users if grants.covers(u)]
        scope = f"users granted app {resolved}"
    elif mode == "filter":
        scope = f"users matching {scim_filter}"
    if not include_inactive:
        users = [u for u in users if u.active]
    memberships = sum(len(u.group_ids) for u in users)
    log.info("IDCS extract: %d of %d users in scope (%s), %d groups, %d memberships, %s",
             len(users), len(all_users), scope, len(groups), memberships,
             client.metrics.describe())
    snapshot = IdcsSnapshot(users, groups, scope, total_users_seen=len(all_users))
    return Extract(snapshot, [u.id for u in all_users if u.id], choice, resolved, memberships)


def extract_snapshot(client: IdcsClient, *, mode: str = "all", app_id: str | None = None,
                     include_inactive: bool = True, scim_filter: str | None = None,
                     extra_attributes: list[str] | None = None,
                     membership: Strategy = "auto") -> IdcsSnapshot:
    """:func:`extract_full`'s snapshot alone."""
    return extract_full(client, mode=mode, app_id=app_id, include_inactive=include_inactive,
                        scim_filter=scim_filter, extra_attributes=extra_attributes,
                        membership=membership).snapshot
