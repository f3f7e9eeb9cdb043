"""Flat tables the suites validate, built from the snapshot and the desired state.

Derived columns (case-folded keys, row fingerprints, "is this group known") let plain GX
expectations express checks such as case-insensitive uniqueness or referential integrity, so the
policy stays in the suite files instead of in code.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from ..idcs.extract import PRIMARY_EMAILS
from ..mapping.rules import SyncRules
from ..mapping.transform import map_group_names, matches_any
from ..model import DesiredState, IdcsGroup, IdcsSnapshot, IdcsUser, key
from .gate import Table


def _fold(text: str | None) -> str | None:
    return key(text) if text else None


def _fingerprint(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def _row_id(prefix: str, field: str) -> Any:
    def record_id(row: int, rec: dict[str, Any]) -> str:
        return str(rec[prefix] or f"row-{row}:{rec.get(field) or '?'}")
    return record_id


def users_table(users: list[IdcsUser], suite: str = "idcs_users") -> Table:
    records = []
    for u in users:
        primaries = u.extra.get(PRIMARY_EMAILS)
        records.append({
            "id": u.id, "user_name": u.user_name, "user_name_key": _fold(u.user_name),
            "email": u.email, "email_key": _fold(u.email),
            "primary_emails": len(primaries) if isinstance(primaries, list) else int(bool(u.email)),
            "display_name": u.display_name or None,
            "has_name": bool(u.display_name or u.given_name or u.family_name),
            "active": u.active, "row_key": _fingerprint(asdict(u)),
        })
    columns = ("id", "user_name", "user_name_key", "email", "email_key", "primary_emails",
               "display_name", "has_name", "active", "row_key")
    return Table(suite, "user", columns, records, _row_id("id", "user_name"))


def groups_table(groups: list[IdcsGroup], suite: str = "idcs_groups") -> Table:
    records = [{"id": g.id or None, "display_name": g.display_name or None,
                "display_name_key": _fold(g.display_name), "row_key": _fingerprint(asdict(g))}
               for g in groups]
    return Table(suite, "group", ("id", "display_name", "display_name_key", "row_key"), records,
                 _row_id("id", "display_name"))


def memberships_table(snapshot: IdcsSnapshot, suite: str = "idcs_memberships") -> Table:
    """One row per (user, group) from the users' ``groups``, the side the extract reads."""
    known_groups = {g.id for g in snapshot.groups if g.id}
    records = [{"user_id": u.id, "user_name": u.user_name, "group_id": gid,
                "group_known": gid in known_groups, "pair_key": f"{u.id}|{gid}"}
               for u in snapshot.users for gid in u.group_ids]

    def record_id(_: int, rec: dict[str, Any]) -> str:
        user = rec["user_id"] or f"(no id) {rec['user_name'] or '?'}"
        return f"{user} in {rec['group_id']}"

    return Table(suite, "membership", ("user_id", "user_name", "group_id", "group_known",
                                       "pair_key"), records, record_id)


def desired_users_table(desired: DesiredState, suite: str = "desired_users") -> Table:
    records = [{"idcs_id": u.idcs_id, "name": u.name or None, "name_key": _fold(u.name),
                "display_name": u.display_name or None, "email": u.email or None}
               for u in desired.users.values()]
    return Table(suite, "user", ("idcs_id", "name", "name_key", "display_name", "email"),
                 records, _row_id("idcs_id", "name"))


def desired_groups_table(snapshot: IdcsSnapshot, rules: SyncRules,
                         suite: str = "desired_groups") -> Table:
    """Every IDCS group the rules select, with the Bitbucket name it maps to (or None).

    Built from the snapshot because the desired state keys groups by name: two IDCS groups that
    map to one name are already merged there. Groups without an id or a displayName are left out:
    the ``idcs_groups`` suite has quarantined them.
    """
    records = []
    for g in snapshot.groups:
        if not g.id or not g.display_name:
            continue
        if not matches_any(g.display_name, rules.groups.include) or matches_any(
                g.display_name, rules.groups.exclude):
            continue
        name = map_group_names([g], rules).get(g.id)
        records.append({"idcs_id": g.id, "idcs_name": g.display_name, "name": name,
                        "name_key": _fold(name)})
    return Table(suite, "group", ("idcs_id", "idcs_name", "name", "name_key"), records,
                 _row_id("idcs_id", "idcs_name"))
