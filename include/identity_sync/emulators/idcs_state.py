"""The IDCS emulator's tenant: users, groups, apps, grants and OAuth clients, with the
memberships, dynamic groups, "All Tenant Users" and derived GROUP_MEMBERSHIP grants computed
from them.

Why separate: the state is the data model the read path (:mod:`.idcs_search`), the writes
(:mod:`.idcs_writes`), persistence and :mod:`.orggen` dumps all work on; it knows nothing of HTTP,
projection or paging.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from . import scim_filter
from .idcs_common import ALL_USERS_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DYNAMIC_GROUP_EXTENSION
from .idcs_projection import USER_CASE_EXACT

# --- state --------------------------------------------------------------------------------------


def _demo_clients() -> list[dict[str, str]]:
    return [{"client_id": DEMO_CLIENT_ID, "client_secret": DEMO_CLIENT_SECRET}]


def is_dynamic(group: Mapping[str, Any]) -> bool:
    ext = scim_filter.get_attr(group, DYNAMIC_GROUP_EXTENSION) or {}
    return scim_filter.get_attr(ext, "membershipType") == "dynamic"


def derived_grant_id(grant_id: str, user_id: str) -> str:
    """Stable id of the GROUP_MEMBERSHIP grant a group grant produces for one member."""
    return hashlib.blake2b(f"{grant_id}/{user_id}".encode(), digest_size=16).hexdigest()


class IdcsState:
    """The tenant: users, groups (members kept as user ids), apps, grants and OAuth clients.

    Memberships are canonical on the group side, as in IDCS; a user's ``groups``, the
    "All Tenant Users" group and GROUP_MEMBERSHIP grants are computed from them. ``version``
    changes on every load so cached search results are never stale.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.load_dict({})

    def load_dict(self, data: Mapping[str, Any]) -> None:
        """Replace the whole state (all or nothing: a bad dump leaves the old state in place).

        Member entries pointing at unknown users are dropped, a stored "All Tenant Users" group
        is ignored (it is computed) and users' ``groups`` are recomputed from group members.
        """
        users = [
            {k: v for k, v in u.items() if k != "groups"} if "groups" in u else u
            for u in data.get("users") or []
        ]
        user_index = _index(users, "user")
        raw_groups = [g for g in data.get("groups") or [] if g.get("id") != ALL_USERS_ID]
        groups = [{k: v for k, v in g.items() if k != "members"} for g in raw_groups]
        group_index = _index(groups, "group")
        apps, grants = list(data.get("apps") or []), list(data.get("grants") or [])
        app_index, grant_index = _index(apps, "app"), _index(grants, "grant")
        members: dict[str, list[str]] = {}
        user_groups: dict[str, list[str]] = {}
        for group in raw_groups:
            ids = list(
                dict.fromkeys(
                    m.get("value")
                    for m in group.get("members") or []
                    if m.get("value") in user_index
                )
            )
            members[group["id"]] = ids
            for uid in ids:
                user_groups.setdefault(uid, []).append(group["id"])
        self.users: list[dict[str, Any]] = users
        self.groups: list[dict[str, Any]] = groups
        self.apps: list[dict[str, Any]] = apps
        self.grants: list[dict[str, Any]] = grants
        self.clients: list[dict[str, str]] = list(data.get("clients") or _demo_clients())
        self.user_index, self.group_index = user_index, group_index
        self.app_index, self.grant_index = app_index, grant_index
        self.ocid_index = {u["ocid"]: i for i, u in enumerate(users) if u.get("ocid")}
        self.members, self.user_groups = members, user_groups
        self.version = getattr(self, "version", 0) + 1
        self._grant_keys: list[tuple[int, str | None]] | None = None
        self._derived_index: dict[str, tuple[int, str]] | None = None
        self._grantee_index: tuple[list[Any], dict[str, list[tuple[int, str | None]]]] | None = None
        self._compute_dynamic_groups()

    def _compute_dynamic_groups(self) -> None:
        """Members of dynamic groups come from their ``membershipRule`` (a filter on users)."""
        for group in self.groups:
            if not is_dynamic(group):
                continue
            rule = (group.get(DYNAMIC_GROUP_EXTENSION) or {}).get("membershipRule") or ""
            try:
                test = scim_filter.compile_filter(rule, USER_CASE_EXACT.__contains__)
            except scim_filter.FilterError as exc:
                raise ValueError(f"group {group['id']} has a bad membershipRule: {exc}") from exc
            gid = group["id"]
            for uid in self.members.get(gid, []):
                self.user_groups[uid].remove(gid)
            self.members[gid] = [u["id"] for u in self.users if test(u)]
            for uid in self.members[gid]:
                self.user_groups.setdefault(uid, []).append(gid)

    def to_dict(self) -> dict[str, Any]:
        """The dump format ``load_dict`` takes (resources are shared, not copied)."""
        groups = []
        for group in self.groups:
            members = [
                {
                    "value": uid,
                    "type": "User",
                    "display": user.get("displayName"),
                    "name": user.get("userName"),
                }
                for uid in self.members.get(group["id"], [])
                for user in (self.users[self.user_index[uid]],)
            ]
            groups.append({**group, "members": members})
        return {
            "users": list(self.users),
            "groups": groups,
            "apps": list(self.apps),
            "grants": list(self.grants),
            "clients": list(self.clients),
        }

    def client_secret(self, client_id: str) -> str | None:
        for client in self.clients:
            if client.get("client_id") == client_id:
                return client.get("client_secret")
        return None

    def member_ids(self, gid: str) -> list[str]:
        if gid == ALL_USERS_ID:
            return [u["id"] for u in self.users]
        return self.members.get(gid, [])

    def grant_keys(self) -> list[tuple[int, str | None]]:
        """Stored grants in creation order, each group grant followed by its derived ones."""
        if self._grant_keys is None:
            keys: list[tuple[int, str | None]] = []
            for i, grant in enumerate(self.grants):
                keys.append((i, None))
                grantee = grant.get("grantee") or {}
                if grantee.get("type") == "Group":
                    keys.extend((i, uid) for uid in self.member_ids(grantee.get("value", "")))
            self._grant_keys = keys
        return self._grant_keys

    def grant_keys_of(self, grantee: str) -> list[tuple[int, str | None]]:
        """The grant keys whose grantee is ``grantee`` (direct and derived), in listing order:
        a ``grantee.value eq`` filter on a tenant with 100,000s of derived grants stays cheap."""
        keys = self.grant_keys()
        if self._grantee_index is None or self._grantee_index[0] is not keys:
            index: dict[str, list[tuple[int, str | None]]] = {}
            for i, uid in keys:
                value = uid if uid is not None else (self.grants[i].get("grantee") or {}).get(
                    "value")
                if isinstance(value, str):
                    index.setdefault(value.casefold(), []).append((i, uid))
            self._grantee_index = (keys, index)
        return self._grantee_index[1].get(grantee.casefold(), [])

    def find_grant(self, grant_id: str) -> tuple[int, str | None] | None:
        if grant_id in self.grant_index:
            return self.grant_index[grant_id], None
        if self._derived_index is None:
            self._derived_index = {
                derived_grant_id(self.grants[i]["id"], uid): (i, uid)
                for i, uid in self.grant_keys()
                if uid is not None
            }
        return self._derived_index.get(grant_id)


def _index(resources: list[dict[str, Any]], kind: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, resource in enumerate(resources):
        rid = resource.get("id")
        if not rid or rid in index:
            raise ValueError(f"{kind} #{i} has a missing or duplicate id: {rid!r}")
        index[rid] = i
    return index
