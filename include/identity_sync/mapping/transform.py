"""Rules + IDCS snapshot → the desired Bitbucket state."""

from __future__ import annotations

import fnmatch
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..model import DesiredState, DesiredUser, IdcsGroup, IdcsSnapshot, IdcsUser, key
from .confusables import mixed_script, skeleton
from .rules import ScopeFilter, SyncRules
from .templates import GROUP_ATTRIBUTES, parse_template

log = logging.getLogger(__name__)


@dataclass
class MappingResult:
    desired: DesiredState
    rejected: list[dict[str, str]] = field(default_factory=list)  # user id, reason
    out_of_scope: int = 0


def matches_any(name: str, patterns: list[str]) -> bool:
    """Case-insensitive glob match (Bitbucket and IDCS names compare case-insensitively)."""
    return any(fnmatch.fnmatchcase(name.casefold(), p.casefold()) for p in patterns)


def _group_name(idcs_name: str, rules: SyncRules) -> str | None:
    g = rules.groups
    if idcs_name in g.rename:
        return g.rename[idcs_name]
    name = parse_template(g.name_template, GROUP_ATTRIBUTES, open_paths=False).render(
        {"displayName": idcs_name, "value": idcs_name})
    if not name:
        return None
    for rule in g.regex_rename:
        name = re.sub(rule.pattern, rule.replace, name)
    return f"{g.prefix}{name}{g.suffix}" if name else None


def map_group_names(groups: list[IdcsGroup], rules: SyncRules) -> dict[str, str]:
    """IDCS group id → Bitbucket group name, for the groups the rules include."""
    mapped: dict[str, str] = {}
    for group in groups:
        if not matches_any(group.display_name, rules.groups.include):
            continue
        if matches_any(group.display_name, rules.groups.exclude):
            continue
        name = _group_name(group.display_name, rules)
        if name:
            mapped[group.id] = name
    return mapped


def user_values(user: IdcsUser) -> dict[str, Any]:
    return {
        **user.extra,
        "id": user.id,
        "userName": user.user_name,
        "displayName": user.display_name,
        "givenName": user.given_name,
        "familyName": user.family_name,
        "email": user.email,
        "active": str(user.active).lower(),
        "federated": str(user.federated).lower(),
    }


def _hits(flt: ScopeFilter, user: IdcsUser, values: dict[str, Any],
          group_names: set[str]) -> list[bool]:
    """The outcome of each condition the filter sets (unset conditions are left out)."""
    hits = []
    if flt.active is not None:
        hits.append(user.active == flt.active)
    if flt.federated is not None:
        hits.append(user.federated == flt.federated)
    if flt.member_of:
        hits.append(bool(group_names & {g.casefold() for g in flt.member_of}))
    hits += [c.test(values.get(c.attribute)) for c in flt.attributes]
    return hits


def in_scope(user: IdcsUser, rules: SyncRules, group_names: set[str]) -> bool:
    values = user_values(user)
    include = _hits(rules.scope.include, user, values, group_names)
    exclude = _hits(rules.scope.exclude, user, values, group_names)
    return all(include) and not any(exclude)


def _collisions(names: dict[str, str], anchors: dict[str, str],
                ids_by_key: dict[str, list[str]]) -> dict[str, str]:
    """IDCS ids to reject, with the reason, for mapped names that collide: the user already
    anchored to that Bitbucket name keeps it; with no such user, every collider is held (never
    first come, first served)."""
    rejected: dict[str, str] = {}
    for name_key, ids in ids_by_key.items():
        if len(ids) < 2:
            continue
        owners = [i for i in ids if key(anchors.get(i, "")) == name_key]
        for idcs_id in ids:
            if owners and idcs_id == owners[0]:
                continue
            others = ", ".join(i for i in ids if i != idcs_id)
            rejected[idcs_id] = (f"mapped name {names[idcs_id]!r} collides with IDCS user(s) "
                                 f"{others}" + (f"; {owners[0]} already owns it" if owners else ""))
    return rejected


def _look_alikes(names: dict[str, str], anchors: dict[str, str]) -> dict[str, str]:
    """IDCS ids to reject, with the reason, for names that look like another name of the run
    (same confusable skeleton, different name): the user whose name is already its anchored
    Bitbucket name keeps it, every other one is held (see :mod:`.confusables`)."""
    by_skeleton: dict[str, list[str]] = defaultdict(list)
    for idcs_id, name in names.items():
        by_skeleton[skeleton(name)].append(idcs_id)
    rejected: dict[str, str] = {}
    for ids in by_skeleton.values():
        if len({key(names[i]) for i in ids}) < 2:
            continue  # same name (exact collisions are _collisions' business) or alone
        for idcs_id in ids:
            if key(anchors.get(idcs_id, "")) == key(names[idcs_id]):
                continue
            others = ", ".join(f"{names[i]!r} ({i})" for i in ids
                               if key(names[i]) != key(names[idcs_id]))
            rejected[idcs_id] = (f"mapped name {names[idcs_id]!r} looks like {others} (same "
                                 "confusable skeleton): look-alike names are not synced")
    return rejected


def build_desired_state(snapshot: IdcsSnapshot, rules: SyncRules,
                        anchors: dict[str, str] | None = None) -> MappingResult:
    """Apply the rules. Users whose mapped name collides, comes out empty, mixes scripts or
    looks like another user's name are rejected."""
    templates = {attr: rule.compile() for attr, rule in rules.users.attributes.items()}
    group_names = map_group_names(snapshot.groups, rules)
    idcs_group_name = {g.id: g.display_name.casefold() for g in snapshot.groups}
    from_attr = rules.groups.from_attribute
    attr_template = (parse_template(from_attr.name_template, GROUP_ATTRIBUTES, open_paths=False)
                     if from_attr else None)
    result = MappingResult(DesiredState({}, [], {}, {}))
    memberships: dict[str, set[str]] = defaultdict(set)
    attribute_groups: set[str] = set()
    mapped: list[tuple[IdcsUser, dict[str, str | None]]] = []
    for user in snapshot.users:
        assert user.id is not None  # the quality gate quarantines users without an id
        if not in_scope(user, rules, {idcs_group_name.get(g, "") for g in user.group_ids}):
            result.out_of_scope += 1
            continue
        rendered = {attr: t.render(user_values(user)) for attr, t in templates.items()}
        missing = [attr for attr, value in rendered.items() if not value]
        if missing:
            result.rejected.append({"id": user.id,
                                    "reason": f"mapped {', '.join(missing)} is empty"})
            continue
        mixed = mixed_script(rendered["name"] or "")
        if mixed:
            result.rejected.append({"id": user.id, "reason": (
                f"mapped name {rendered['name']!r} mixes scripts ({', '.join(sorted(mixed))}): "
                "look-alike names are not synced")})
            continue
        mapped.append((user, rendered))
    ids_by_key: dict[str, list[str]] = defaultdict(list)
    for user, rendered in mapped:
        ids_by_key[key(rendered["name"] or "")].append(user.id or "")
    collided = _collisions({u.id or "": r["name"] or "" for u, r in mapped}, anchors or {},
                           ids_by_key)
    result.rejected += [{"id": i, "reason": why} for i, why in collided.items()]
    look_alikes = _look_alikes({u.id or "": r["name"] or "" for u, r in mapped
                                if u.id not in collided}, anchors or {})
    result.rejected += [{"id": i, "reason": why} for i, why in look_alikes.items()]
    collided.update(look_alikes)

    for user, rendered in mapped:
        if user.id in collided:
            continue
        name = rendered["name"] or ""
        result.desired.users[user.id] = DesiredUser(user.id, name, rendered["displayName"] or "",
                                                    rendered["emailAddress"] or "", user.active)
        if not user.active:
            continue
        for gid in user.group_ids:
            if gid in group_names:
                memberships[group_names[gid]].add(name)
        for group in rules.groups.default_groups:
            memberships[group].add(name)
        if from_attr and attr_template:
            raw = user.extra.get(from_attr.attribute)
            for value in raw if isinstance(raw, list) else [raw]:
                group = attr_template.render({"value": value}) if value else None
                if group:
                    memberships[group].add(name)
                    attribute_groups.add(group)

    desired = result.desired
    protected = rules.groups.protected
    produced = sorted({*group_names.values(), *rules.groups.default_groups, *attribute_groups},
                      key=key)
    produced = [g for g in produced if not matches_any(g, protected)]
    desired.managed_groups = [g for g in produced if matches_any(g, rules.groups.managed)]
    desired.additive_groups = [g for g in produced if not matches_any(g, rules.groups.managed)]
    desired.memberships = {g: sorted(memberships.get(g, ()), key=key) for g in produced}
    desired.initial_groups = [g for g in rules.groups.new_user_groups
                              if not matches_any(g, protected)]
    desired.group_permissions = {g: str(p.value) for g, p in rules.groups.permissions.items()
                                 if not matches_any(g, protected)}
    desired.create_only = [attr for attr, rule in rules.users.attributes.items()
                           if rule.apply == "create"]
    if result.rejected:
        log.warning("mapping rejected %d users (quarantined with the reason)",
                    len(result.rejected))
    return result
