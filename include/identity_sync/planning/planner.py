"""Desired state + Bitbucket state + identity anchors → an ordered list of operations.

Pure function, no I/O. Properties the tests hold it to: applying the plan makes the managed part of
Bitbucket equal the desired state, planning again against the result gives an empty plan, and
nothing outside the managed scope or inside the protected set is touched.

Ownership (design invariant 4): only anchored users (created or adopted by the sync) are changed or
deprovisioned; only managed groups lose members (additive groups only gain them); protected users
and groups are never touched; users from read-only directories are left to Bitbucket's own sync.
Groups: the sync manages only groups it created (``owned_groups``) or that the rules name
(``named_groups``); an existing Bitbucket group an IDCS group maps onto is otherwise a conflict.
Privilege: a group holding PROJECT_CREATE, ADMIN or SYS_ADMIN is never changed, and an account
holding one (directly or through a group) is never adopted, renamed, updated, deprovisioned or
removed from a group, unless the rules allow-list it. Every such refusal is a conflict in
:attr:`Plan.conflicts` (``{"id", "kind", "reason", "record_type"}``), never a takeover.
Groups quarantined this run (``held_groups``) are held: not deleted, and no member added or
removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mapping.confusables import confusable_reason, skeleton
from ..model import BitbucketState, BitbucketUser, DesiredState, DesiredUser, key
from .operations import Operation, OpKind

PERMISSION_RANK = {"LICENSED_USER": 1, "PROJECT_CREATE": 2, "ADMIN": 3, "SYS_ADMIN": 4}
# Global permissions that make a group or an account privileged (design invariant 4).
ELEVATED_PERMISSIONS = frozenset({"PROJECT_CREATE", "ADMIN", "SYS_ADMIN"})
ADOPT_MODES = ("username_and_email", "username", "username_or_email", "none")
# Conflict kinds (Plan.conflicts[*]["kind"]); README "Ownership and conflicts" explains each.
CONFLICT_KINDS = ("anchored_elsewhere", "protected", "privileged_user", "adopt_off",
                  "details_differ", "name_taken", "group_exists", "privileged_group",
                  "confusable_name")


@dataclass
class PlanInput:
    desired: DesiredState
    current: BitbucketState
    anchors: dict[str, str]  # IDCS id -> Bitbucket user name
    deprovision: str = "disable"  # disable | delete | keep
    protected_users: list[str] = field(default_factory=list)
    members_per_request: int = 100
    adopt: str = "username_and_email"  # see ADOPT_MODES
    protected_groups: list[str] = field(default_factory=list)
    previously_managed_groups: list[str] = field(default_factory=list)
    delete_removed_groups: bool = False
    # Groups the sync created (the audit store's owned_groups). None: ownership is not tracked
    # and every existing group the rules produce is managed (callers from before ownership).
    owned_groups: list[str] | None = None
    named_groups: list[str] = field(default_factory=list)  # groups the rules name explicitly
    privileged_allow_groups: list[str] = field(default_factory=list)  # groups.allow_privileged
    privileged_allow_users: list[str] = field(default_factory=list)  # users.allow_privileged
    held_groups: list[str] = field(default_factory=list)  # quarantined this run: held


@dataclass
class Plan:
    operations: list[Operation]
    anchors: dict[str, str]  # anchors as they will be after the apply
    deprovisioned: list[str]  # Bitbucket names being disabled or deleted
    licence_losses: list[str] = field(default_factory=list)  # users losing a licence-granting group
    # {"id": IDCS id (users) or group name, "kind": CONFLICT_KINDS, "reason", "record_type"}
    conflicts: list[dict[str, str]] = field(default_factory=list)
    deleted_groups: dict[str, int] = field(default_factory=dict)  # group name -> members it had
    # User keys removed from a group granting a global permission (LICENSED_USER included).
    permission_removals: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operations:
            counts[op.kind.value] = counts.get(op.kind.value, 0) + 1
        return counts

    def conflict_counts(self) -> dict[str, int]:
        """Conflicts by kind, e.g. ``{"privileged_user": 1, "group_exists": 2}``."""
        counts: dict[str, int] = {}
        for conflict in self.conflicts:
            counts[conflict["kind"]] = counts.get(conflict["kind"], 0) + 1
        return counts


def _details(user: DesiredUser) -> dict[str, str]:
    return {"name": user.name, "displayName": user.display_name, "email": user.email}


class _Planner:
    def __init__(self, inp: PlanInput) -> None:
        if inp.adopt not in ADOPT_MODES:
            raise ValueError(f"adopt must be one of {', '.join(ADOPT_MODES)}, not {inp.adopt!r}")
        self.inp, self.cur, self.want = inp, inp.current, inp.desired
        self.ops: list[Operation] = []
        self.protected = {key(u) for u in inp.protected_users}
        self.protected_groups = {key(g) for g in inp.protected_groups}
        self.owned = None if inp.owned_groups is None else {key(g) for g in inp.owned_groups}
        self.named = {key(g) for g in inp.named_groups}
        self.allow_groups = {key(g) for g in inp.privileged_allow_groups}
        self.allow_users = {key(u) for u in inp.privileged_allow_users}
        self.held = {key(g) for g in inp.held_groups}
        self.anchors = dict(inp.anchors)
        self.owner_of = {key(name): idcs_id for idcs_id, name in inp.anchors.items()}
        self.final_name: dict[str, str] = {}  # IDCS id -> Bitbucket name after apply
        self.created: list[str] = []
        self.create_only = set(self.want.create_only)
        self.licence_groups = {g for g, p in self.cur.group_permissions.items()
                               if p in PERMISSION_RANK and g not in self.protected_groups}
        self.elevated_groups = {g for g, p in self.cur.group_permissions.items()
                                if p in ELEVATED_PERMISSIONS}
        self.deprovisioned: list[str] = []
        self.why_removed: dict[str, str] = {}
        self.licence_losses: set[str] = set()
        self.conflicts: list[dict[str, str]] = []
        self.conflicted: set[tuple[str, str]] = set()  # (record_type, id): one entry each
        self.blocked_groups: set[str] = set()  # group keys the sync must leave alone this run
        self.deleted_groups: dict[str, int] = {}
        self.permission_removals: set[str] = set()
        # Indexes built once: looking a user up in every group per user made planning
        # quadratic in memberships (issue 10: 20 s for a no-op plan of 8,000 users).
        self.current_groups_of: dict[str, list[str]] = {}  # user key -> group keys, as read
        for gkey, members in self.cur.memberships.items():
            for member in members:
                self.current_groups_of.setdefault(key(member), []).append(gkey)
        self.wanted_member_keys = {key(m) for members in self.want.memberships.values()
                                   for m in members}
        self.users_by_email: dict[str, list[BitbucketUser]] = {}
        for bb_user in self.cur.users.values():
            self.users_by_email.setdefault(key(bb_user.email), []).append(bb_user)
        self.managed_group_keys = {key(g) for g in self.want.managed_groups}
        # Look-alike names (mapping.confusables): confusable skeleton -> existing Bitbucket names.
        self.by_skeleton: dict[str, list[str]] = {}
        for bb_user in self.cur.users.values():
            self.by_skeleton.setdefault(skeleton(bb_user.name), []).append(bb_user.name)
        self.created_group_keys: set[str] = set()

    def add(self, kind: OpKind, target: str, params: dict, reason: str, **kw: object) -> None:
        self.ops.append(Operation(kind, target, params, reason, **kw))  # type: ignore[arg-type]
        if kind is OpKind.CREATE_GROUP:
            self.created_group_keys.add(key(target))

    def conflict(self, record_id: str, kind: str, reason: str, record_type: str = "user") -> None:
        """Report a collision the sync refuses to resolve by taking something over."""
        if (record_type, record_id) in self.conflicted:
            return
        self.conflicted.add((record_type, record_id))
        self.conflicts.append({"id": record_id, "kind": kind, "reason": reason,
                               "record_type": record_type})

    def look_alike(self, user: DesiredUser, new_name: str, what: str) -> bool:
        """A ``confusable_name`` conflict when the name this user would get (created or renamed
        to) looks like a different existing Bitbucket account: ``аdmin`` (Cyrillic а) next to
        ``admin``. Names already in Bitbucket are the adoption rules' business."""
        others = [n for n in self.by_skeleton.get(skeleton(new_name), ())
                  if key(n) != key(new_name)]
        if not others:
            return False
        self.conflict(user.idcs_id, "confusable_name",
                      f"{what} blocked: " + confusable_reason(new_name, others[0]))
        return True

    # -- ownership and privilege -------------------------------------------------------------------
    def privilege(self, name: str) -> str | None:
        """What makes a Bitbucket account privileged (None: nothing, or allow-listed)."""
        user_key = key(name)
        if user_key in self.allow_users:
            return None
        direct = self.cur.user_permissions.get(user_key)
        if direct in ELEVATED_PERMISSIONS:
            return f"holds {direct}"
        for gkey in sorted(self.current_groups_of.get(user_key, [])):
            if gkey in self.elevated_groups:
                return (f"holds {self.cur.group_permissions[gkey]} through group "
                        f"{self.cur.groups.get(gkey, gkey)!r}")
        return None

    def privileged_user(self, name: str, idcs_id: str | None, what: str) -> bool:
        """True (and a conflict reported) when ``name`` is privileged: ``what`` is refused."""
        why = self.privilege(name)
        if why is None:
            return False
        self.conflict(idcs_id or name, "privileged_user",
                      f"Bitbucket user {name!r} {why}: not {what} (allow-list it in "
                      "users.allow_privileged to let the sync manage it)")
        return True

    def privileged_group(self, gkey: str) -> bool:
        return gkey in self.elevated_groups and gkey not in self.allow_groups

    def foreign_group(self, gkey: str) -> bool:
        """Exists in Bitbucket, and the sync neither created it nor do the rules name it."""
        return (self.owned is not None and gkey in self.cur.groups and gkey not in self.owned
                and gkey not in self.named and gkey not in self.created_group_keys)

    def group_blocked(self, gkey: str, name: str) -> bool:
        """Whether the sync must leave a group the rules produce alone (a conflict reported)."""
        if gkey in self.blocked_groups:
            return True
        if gkey in self.held or gkey in self.protected_groups:
            self.blocked_groups.add(gkey)
            return True
        if self.privileged_group(gkey):
            self.conflict(name, "privileged_group",
                          f"Bitbucket group {name!r} holds {self.cur.group_permissions[gkey]}: "
                          "its members and permission are left alone (allow-list it in "
                          "groups.allow_privileged to let the sync manage it)", "group")
        elif self.foreign_group(gkey):
            self.conflict(name, "group_exists",
                          f"Bitbucket group {name!r} already exists and the sync did not create "
                          "it: not joined, emptied or changed (list it in groups.adopt_existing "
                          "to let the sync manage it)", "group")
        else:
            return False
        self.blocked_groups.add(gkey)
        return True

    # -- groups ------------------------------------------------------------------------------------
    def groups(self) -> None:
        for group in [*self.want.managed_groups, *self.want.additive_groups]:
            gkey = key(group)
            if gkey not in self.cur.groups:
                if gkey not in self.held:
                    self.add(OpKind.CREATE_GROUP, group, {"name": group},
                             "group produced by the rules is missing in Bitbucket",
                             after={"name": group})
                continue
            self.group_blocked(gkey, self.cur.groups[gkey])
        existing_or_new = set(self.cur.groups) | {key(g) for g in self.want.groups_to_read()}
        for group, permission in self.want.group_permissions.items():
            gkey = key(group)
            if gkey not in existing_or_new or gkey in self.held:
                continue
            before = self.cur.group_permissions.get(gkey)
            if before == permission:
                continue
            if gkey in self.cur.groups and self.group_blocked(gkey, self.cur.groups[gkey]):
                continue
            self.add(OpKind.SET_GROUP_PERMISSION, group,
                     {"group": group, "permission": permission},
                     "rules grant this permission to the group",
                     before={"permission": before}, after={"permission": permission})
        # A user wanted only in groups left alone is not "wanted" anywhere (reactivation).
        self.wanted_member_keys = {key(m) for g, members in self.want.memberships.items()
                                   if key(g) not in self.blocked_groups for m in members}

    # -- users -------------------------------------------------------------------------------------
    def differs(self, existing: BitbucketUser, user: DesiredUser) -> bool:
        return (("displayName" not in self.create_only
                 and existing.display_name != user.display_name)
                or ("emailAddress" not in self.create_only and existing.email != user.email))

    def update(self, name: str, existing: BitbucketUser, user: DesiredUser, reason: str) -> None:
        display = (existing.display_name if "displayName" in self.create_only
                   else user.display_name)
        email = existing.email if "emailAddress" in self.create_only else user.email
        self.add(OpKind.UPDATE_USER, name, {"name": name, "displayName": display, "email": email},
                 reason, before={"displayName": existing.display_name, "email": existing.email},
                 after={"displayName": display, "email": email}, idcs_id=user.idcs_id)

    def place(self, user: DesiredUser, name: str) -> None:
        self.anchors[user.idcs_id] = self.final_name[user.idcs_id] = name

    def rename_or_keep(self, existing: BitbucketUser, user: DesiredUser, why: str) -> str:
        """Rename ``existing`` to the desired name when the rules allow it and the name is free."""
        if key(existing.name) == key(user.name) or "name" in self.create_only:
            return existing.name
        if key(user.name) in self.cur.users:
            self.conflict(user.idcs_id, "name_taken", f"rename of {existing.name!r} to "
                          f"{user.name!r} blocked: that Bitbucket name is taken")
            return existing.name
        if self.look_alike(user, user.name, f"rename of {existing.name!r}"):
            return existing.name
        self.add(OpKind.RENAME_USER, existing.name, {"name": existing.name, "newName": user.name},
                 why, before={"name": existing.name}, after={"name": user.name},
                 idcs_id=user.idcs_id)
        return user.name

    def adoptable(self, user: DesiredUser) -> BitbucketUser | None:
        """The existing account this IDCS user may take over, or None (a conflict reported when
        one exists but may not be adopted)."""
        adopt = self.inp.adopt
        candidate = self.cur.users.get(key(user.name))
        if candidate is None and adopt == "username_or_email":
            same_email = [u for u in self.users_by_email.get(key(user.email), [])
                          if key(u.name) not in self.owner_of]
            candidate = same_email[0] if len(same_email) == 1 else None
        if candidate is None:
            return None
        name = candidate.name
        owner = self.owner_of.get(key(name))
        if owner is not None and owner != user.idcs_id:
            self.conflict(user.idcs_id, "anchored_elsewhere",
                          f"Bitbucket user {name!r} belongs to IDCS user {owner}")
        elif not candidate.mutable or key(name) in self.protected:
            self.conflict(user.idcs_id, "protected", f"Bitbucket user {name!r} is protected "
                          "or read-only")
        elif self.privileged_user(name, user.idcs_id, "adopted"):
            pass
        elif adopt == "none":
            self.conflict(user.idcs_id, "adopt_off",
                          f"Bitbucket user {name!r} exists and adoption is off")
        elif adopt == "username_and_email" and key(candidate.email) != key(user.email):
            self.conflict(user.idcs_id, "details_differ",
                          f"Bitbucket user {name!r} exists with another e-mail address "
                          f"({candidate.email!r}, IDCS has {user.email!r}): not adopted "
                          "(users.adopt: username_and_email)")
        else:
            return candidate
        return None

    def users(self) -> None:
        for user in self.want.users.values():
            anchored = self.anchors.get(user.idcs_id)
            if key(user.name) in self.protected:
                if user.active and key(anchored or "") != key(user.name):
                    self.conflict(user.idcs_id, "protected", f"IDCS user maps to the protected "
                                  f"Bitbucket name {user.name!r}: not synced")
                continue
            existing = self.cur.users.get(key(anchored)) if anchored else None
            if existing is not None:
                self.anchored(existing, user)
                continue
            if not user.active:
                continue
            candidate = self.adoptable(user)
            if candidate is not None:
                how = "userName" if key(candidate.name) == key(user.name) else "email"
                self.add(OpKind.ADOPT_USER, candidate.name, {"name": candidate.name},
                         f"existing Bitbucket user matches IDCS {how}", idcs_id=user.idcs_id)
                self.owner_of[key(candidate.name)] = user.idcs_id
                name = self.rename_or_keep(candidate, user, f"adopted by {how}: take IDCS name")
                self.place(user, name)
                if self.differs(candidate, user):
                    self.update(name, candidate, user, "details differ from IDCS")
                continue
            if key(user.name) in self.cur.users:
                continue  # taken and not adoptable: the conflict is recorded
            if self.look_alike(user, user.name, "create"):
                continue
            owner = self.owner_of.get(key(user.name))
            self.add(OpKind.CREATE_USER, user.name, {
                **_details(user),
                # What the apply needs to tell our own account from another one if Bitbucket
                # says the name exists (409) or a create without an answer is found on reading
                # back: done only when provably ours, else a conflict (invariant 2).
                "ownership": {"adopt": self.inp.adopt, "anchored_to": owner,
                              "allow_privileged": key(user.name) in self.allow_users}},
                "user in IDCS scope has no Bitbucket account", after=_details(user),
                idcs_id=user.idcs_id)
            self.place(user, user.name)
            self.created.append(user.name)

    def anchored(self, existing: BitbucketUser, user: DesiredUser) -> None:
        """An account the sync owns (anchored by IDCS id): follow IDCS renames and details,
        unless it has become privileged since."""
        wants_rename = (key(existing.name) != key(user.name) and "name" not in self.create_only)
        if (wants_rename or self.differs(existing, user)) and self.privileged_user(
                existing.name, user.idcs_id, "renamed or updated"):
            self.place(user, existing.name)
        else:
            name = self.rename_or_keep(existing, user,
                                       "userName changed in IDCS (anchored by IDCS id)")
            self.place(user, name)
            if self.differs(existing, user):
                self.update(name, existing, user, "details changed in IDCS")
        name = self.final_name[user.idcs_id]
        if user.active and self.unlicensed(existing.name) and self.wants_groups(user):
            self.add(OpKind.REACTIVATE_USER, name, {"name": name},
                     "active in IDCS again: memberships restored", idcs_id=user.idcs_id)

    def unlicensed(self, name: str) -> bool:
        """In no group the sync reads and without a direct permission: what ``disable`` leaves."""
        return (key(name) not in self.current_groups_of
                and key(name) not in self.cur.user_permissions)

    def wants_groups(self, user: DesiredUser) -> bool:
        return key(user.name) in self.wanted_member_keys

    # -- deprovisioning ----------------------------------------------------------------------------
    def leavers(self) -> None:
        active_ids = {u.idcs_id for u in self.want.users.values() if u.active}
        leaving = [(i, n) for i, n in self.anchors.items() if i not in active_ids
                   and key(n) in self.cur.users and key(n) not in self.protected]
        policy = self.inp.deprovision
        for idcs_id, name in sorted(leaving, key=lambda p: key(p[1])):
            why = "inactive in IDCS" if idcs_id in self.want.users else "left the IDCS scope"
            if policy == "keep":
                continue
            if self.privileged_user(name, idcs_id, f"deprovisioned ({why})"):
                continue
            if policy == "delete":
                self.add(OpKind.DELETE_USER, name, {"name": name}, f"deprovision (delete): {why}",
                         before={"name": name}, idcs_id=idcs_id)
                self.deprovisioned.append(name)
                self.why_removed[key(name)] = f"deprovision (delete): {why}"
                continue
            reason = f"deprovision (disable): {why}"
            steps_before = len(self.ops)
            if key(name) in self.cur.user_permissions:
                self.add(OpKind.REVOKE_USER_PERMISSION, name, {"name": name}, reason,
                         before={"permission": self.cur.user_permissions[key(name)]},
                         after={"permission": None}, idcs_id=idcs_id)
            member_of = sorted({g for g in self.current_groups_of.get(key(name), [])
                                if (g in self.licence_groups or g in self.managed_group_keys)
                                and g not in self.held and g not in self.protected_groups
                                and not self.privileged_group(g)
                                and not (g in self.managed_group_keys and self.foreign_group(g))})
            if len(self.ops) > steps_before or member_of:
                self.ops.insert(steps_before, Operation(
                    OpKind.DISABLE_USER, name, {"name": name}, reason,
                    before={"groups": member_of}, after={"groups": []}, idcs_id=idcs_id))
                self.deprovisioned.append(name)
                self.why_removed[key(name)] = reason

    # -- memberships -------------------------------------------------------------------------------
    def memberships(self) -> None:
        renamed = {key(op.params["name"]): op.params["newName"] for op in self.ops
                   if op.kind is OpKind.RENAME_USER}
        placed = {key(u.name): self.final_name[u.idcs_id] for u in self.want.users.values()
                  if u.idcs_id in self.final_name}
        managed = self.managed_group_keys
        wanted_by_group = {
            key(g): {key(placed[key(n)]): placed[key(n)] for n in self.want.memberships.get(g, [])
                     if key(n) in placed}
            for g in self.want.groups_to_read()}
        for group in self.want.initial_groups:
            wanted = wanted_by_group.setdefault(key(group), {})
            wanted.update({key(n): n for n in self.created})
        names = {key(g): g for g in [*self.want.groups_to_read(), *self.want.initial_groups]}
        names.update({g: self.cur.groups[g] for g in self.licence_groups if g in self.cur.groups})
        for gkey in sorted(set(wanted_by_group) | (self.licence_groups & set(self.cur.groups))):
            group = names[gkey]
            if gkey in self.protected_groups or gkey in self.held:
                continue
            produced = gkey in wanted_by_group
            if produced and gkey in self.cur.groups and self.group_blocked(
                    gkey, self.cur.groups[gkey]):
                continue  # an IDCS group maps onto a group the sync may not manage
            if gkey not in self.cur.groups and gkey not in self.created_group_keys:
                self.add(OpKind.CREATE_GROUP, group, {"name": group},
                         "group for new users is missing in Bitbucket", after={"name": group})
            wanted = wanted_by_group.get(gkey, {})
            current = {key(m): m for m in (renamed.get(key(n), n)
                                           for n in self.cur.memberships.get(gkey, []))}
            for member_key, member in sorted(current.items()):
                if member_key in wanted or member_key in self.protected:
                    continue
                leaving = self.why_removed.get(member_key)
                if gkey not in managed and not (leaving and gkey in self.licence_groups):
                    continue  # additive or unmanaged licence group: only leavers lose it
                if self.inp.deprovision == "delete" and leaving:
                    continue  # the delete removes memberships with the user
                if self.privileged_group(gkey):
                    self.group_blocked(gkey, group)  # a leaver stays in a privileged group
                    continue
                if not leaving and self.privileged_user(
                        member, self.owner_of.get(member_key), f"removed from {group}"):
                    continue
                if gkey in self.licence_groups:
                    self.licence_losses.add(member_key)
                if gkey in self.cur.group_permissions:
                    self.permission_removals.add(member_key)
                self.add(OpKind.REMOVE_MEMBERSHIP, member, {"user": member, "group": group},
                         f"{leaving or 'not a member in IDCS'}: remove from {group}",
                         before={"member": True}, after={"member": False})
            missing = sorted((n for k, n in wanted.items() if k not in current), key=key)
            if missing and self.privileged_group(gkey):
                self.group_blocked(gkey, group)
                continue
            for start in range(0, len(missing), self.inp.members_per_request):
                chunk = missing[start : start + self.inp.members_per_request]
                self.add(OpKind.ADD_MEMBERS, group, {"group": group, "users": chunk},
                         "member in IDCS, not in Bitbucket", after={"members": chunk})

    def removed_groups(self) -> None:
        if not self.inp.delete_removed_groups:
            return
        still = {key(g) for g in self.want.groups_to_read()}
        for group in self.inp.previously_managed_groups:
            gkey = key(group)
            if (gkey in still or gkey not in self.cur.groups or gkey in self.protected_groups
                    or gkey in self.held or self.foreign_group(gkey)):
                continue  # produced, gone, protected, quarantined this run, or not ours
            name = self.cur.groups[gkey]
            if self.privileged_group(gkey):
                self.group_blocked(gkey, name)
                continue
            members = len(self.cur.memberships.get(gkey, []))
            self.add(OpKind.DELETE_GROUP, name, {"name": name},
                     "managed group no longer produced by the rules (groups.delete_removed)",
                     before={"members": members})
            self.deleted_groups[name] = members

    def run(self) -> Plan:
        self.groups()
        self.users()
        self.leavers()
        self.memberships()
        self.removed_groups()
        anchors = self.anchors
        if self.inp.deprovision == "delete":
            gone = {key(n) for n in self.deprovisioned}
            anchors = {i: n for i, n in anchors.items() if key(n) not in gone}
        losses = sorted(self.licence_losses - {key(n) for n in self.deprovisioned})
        return Plan(self.ops, anchors, self.deprovisioned, losses, self.conflicts,
                    self.deleted_groups, sorted(self.permission_removals))


def plan_changes(inp: PlanInput) -> Plan:
    return _Planner(inp).run()
