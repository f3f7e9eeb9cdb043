"""Rules + IDCS snapshot → the desired Bitbucket state."""

from __future__ import annotations

import fnmatch
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from ..model import DesiredState, DesiredUser, IdcsGroup, IdcsSnapshot, IdcsUser, key
from .rules import SyncRules
from .templates import GROUP_ATTRIBUTES, parse_template

log = logging.getLogger(__name__)


@dataclass
class MappingResult:
    desired: DesiredState
    rejected: list[dict[str, str]] = field(default_factory=list)  # user id, reason


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name.casefold(), p.casefold()) for p in patterns)


def map_group_names(groups: list[IdcsGroup], rules: SyncRules) -> dict[str, str]:
    """IDCS group id → Bitbucket group name, for the groups the rules include."""
    template = parse_template(rules.groups.name_template, GROUP_ATTRIBUTES)
    mapped: dict[str, str] = {}
    for group in groups:
        if not _matches(group.display_name, rules.groups.include):
            continue
        if _matches(group.display_name, rules.groups.exclude):
            continue
        name = rules.groups.rename.get(group.display_name) or template.render(
            {"id": group.id, "displayName": group.display_name}
        )
        if name:
            mapped[group.id] = name
    return mapped


def _user_values(user: IdcsUser) -> dict[str, str | None]:
    return {
        "id": user.id,
        "userName": user.user_name,
        "displayName": user.display_name,
        "givenName": user.given_name,
        "familyName": user.family_name,
        "email": user.email,
    }


def build_desired_state(snapshot: IdcsSnapshot, rules: SyncRules) -> MappingResult:
    """Apply the rules. Users whose mapped name collides or comes out empty are rejected."""
    attrs = rules.users.attributes
    name_t, display_t, email_t = (
        attrs.name.compile(),
        attrs.displayName.compile(),
        attrs.emailAddress.compile(),
    )
    group_names = map_group_names(snapshot.groups, rules)
    result = MappingResult(DesiredState({}, [], {}, {}))
    seen_names: dict[str, str] = {}
    memberships: dict[str, set[str]] = defaultdict(set)

    for user in snapshot.users:
        assert user.id is not None  # the quality gate quarantines users without an id
        values = _user_values(user)
        name, display, email = (t.render(values) for t in (name_t, display_t, email_t))
        if not name or not display or not email:
            missing = [
                f for f, v in (("name", name), ("displayName", display), ("emailAddress", email))
                if not v
            ]
            result.rejected.append(
                {"id": user.id, "reason": f"mapped {', '.join(missing)} is empty"}
            )
            continue
        if key(name) in seen_names:
            result.rejected.append(
                {"id": user.id, "reason": f"mapped name {name!r} collides with IDCS user "
                 f"{seen_names[key(name)]}"}
            )
            continue
        seen_names[key(name)] = user.id
        result.desired.users[user.id] = DesiredUser(user.id, name, display, email, user.active)
        if not user.active:
            continue
        for gid in user.group_ids:
            if gid in group_names:
                memberships[group_names[gid]].add(name)
        for group in rules.groups.default_groups:
            memberships[group].add(name)

    managed = sorted({*group_names.values(), *rules.groups.default_groups}, key=key)
    protected = {key(g) for g in rules.groups.protected}
    managed = [g for g in managed if key(g) not in protected]
    result.desired.managed_groups = managed
    result.desired.memberships = {g: sorted(memberships.get(g, ()), key=key) for g in managed}
    result.desired.group_permissions = {
        g: str(p.value) for g, p in rules.groups.permissions.items() if key(g) not in protected
    }
    if result.rejected:
        log.warning("mapping rejected %d users", len(result.rejected))
    return result
