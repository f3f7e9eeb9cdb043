"""Desired state + Bitbucket state + identity anchors → an ordered list of operations.

Pure function, no I/O. Properties the tests hold it to: applying the plan makes the managed part of
Bitbucket equal the desired state, and planning again against the result gives an empty plan.
Ownership (design invariant 4): only anchored users (created or adopted by the sync) are changed or
deprovisioned; only managed groups lose members; protected users and groups are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import BitbucketState, BitbucketUser, DesiredState, DesiredUser, key
from .operations import Operation, OpKind

PERMISSION_RANK = {"LICENSED_USER": 1, "PROJECT_CREATE": 2, "ADMIN": 3, "SYS_ADMIN": 4}


@dataclass
class PlanInput:
    desired: DesiredState
    current: BitbucketState
    anchors: dict[str, str]  # IDCS id -> Bitbucket user name
    deprovision: str = "disable"  # disable | delete | keep
    protected_users: list[str] = field(default_factory=list)
    members_per_request: int = 100


@dataclass
class Plan:
    operations: list[Operation]
    anchors: dict[str, str]  # anchors as they will be after the apply
    deprovisioned: list[str]  # Bitbucket names being disabled or deleted

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operations:
            counts[op.kind.value] = counts.get(op.kind.value, 0) + 1
        return counts


def _details(user: DesiredUser) -> dict[str, str]:
    return {"name": user.name, "displayName": user.display_name, "email": user.email}


def plan_changes(inp: PlanInput) -> Plan:
    ops: list[Operation] = []
    cur, want = inp.current, inp.desired
    protected = {key(u) for u in inp.protected_users}
    anchors = dict(inp.anchors)
    anchored_names = {key(name): idcs_id for idcs_id, name in anchors.items()}

    # Groups: create missing managed groups, then grant the configured permissions.
    for group in want.managed_groups:
        if key(group) not in cur.groups:
            ops.append(Operation(OpKind.CREATE_GROUP, group, {"name": group},
                                 "managed group missing in Bitbucket", after={"name": group}))
    existing_or_new = set(cur.groups) | {key(g) for g in want.managed_groups}
    for group, permission in want.group_permissions.items():
        if key(group) not in existing_or_new:
            continue
        before = cur.group_permissions.get(key(group))
        if before != permission:
            ops.append(Operation(OpKind.SET_GROUP_PERMISSION, group,
                                 {"group": group, "permission": permission},
                                 "rules grant this permission to the group",
                                 before={"permission": before}, after={"permission": permission}))

    # Users: create, rename, update or adopt each desired user.
    final_name: dict[str, str] = {}  # IDCS id -> Bitbucket name after apply
    for user in want.users.values():
        if key(user.name) in protected:
            continue
        anchored = anchors.get(user.idcs_id)
        existing = cur.users.get(key(anchored)) if anchored else None
        if existing is not None:
            name = existing.name
            if key(name) != key(user.name):
                if key(user.name) in cur.users:
                    reason = f"IDCS rename to {user.name!r} blocked: that name is taken"
                else:
                    ops.append(Operation(OpKind.RENAME_USER, name,
                                         {"name": name, "newName": user.name},
                                         "userName changed in IDCS (anchored by IDCS id)",
                                         before={"name": name}, after={"name": user.name},
                                         idcs_id=user.idcs_id))
                    name = user.name
                    reason = "details changed in IDCS"
            else:
                reason = "details changed in IDCS"
            anchors[user.idcs_id] = final_name[user.idcs_id] = name
            if _differs(existing, user):
                ops.append(_update(name, existing, user, reason))
            continue
        same_name = cur.users.get(key(user.name))
        if same_name is not None:
            owner = anchored_names.get(key(same_name.name))
            if owner is not None and owner != user.idcs_id:
                continue  # another IDCS identity owns this Bitbucket user: never hijack it
            if not same_name.mutable or not user.active:
                continue  # read-only directory users belong to Bitbucket's own directory sync
            anchors[user.idcs_id] = final_name[user.idcs_id] = same_name.name
            ops.append(Operation(OpKind.ADOPT_USER, same_name.name, {"name": same_name.name},
                                 "existing Bitbucket user matches IDCS userName",
                                 idcs_id=user.idcs_id))
            if _differs(same_name, user):
                ops.append(_update(same_name.name, same_name, user, "details differ from IDCS"))
            continue
        if not user.active:
            continue
        ops.append(Operation(OpKind.CREATE_USER, user.name, _details(user),
                             "user in IDCS scope has no Bitbucket account",
                             after=_details(user), idcs_id=user.idcs_id))
        anchors[user.idcs_id] = final_name[user.idcs_id] = user.name
    placed = {key(u.name): final_name[u.idcs_id] for u in want.users.values()
              if u.idcs_id in final_name}

    # Deprovisioning: anchored users no longer active in scope.
    active_ids = {u.idcs_id for u in want.users.values() if u.active}
    leaving = [
        (idcs_id, name) for idcs_id, name in anchors.items()
        if idcs_id not in active_ids and key(name) in cur.users and key(name) not in protected
    ]
    deprovisioned: list[str] = []
    why_removed: dict[str, str] = {}
    managed_keys = {key(g) for g in want.managed_groups}
    for idcs_id, name in sorted(leaving, key=lambda p: key(p[1])):
        why = ("inactive in IDCS" if idcs_id in want.users else "left the IDCS scope")
        if inp.deprovision == "keep":
            continue
        if inp.deprovision == "delete":
            ops.append(Operation(OpKind.DELETE_USER, name, {"name": name},
                                 f"deprovision (delete): {why}", before={"name": name},
                                 idcs_id=idcs_id))
            deprovisioned.append(name)
            why_removed[key(name)] = f"deprovision (delete): {why}"
            continue
        touched = False
        if key(name) in cur.user_permissions:
            ops.append(Operation(OpKind.REVOKE_USER_PERMISSION, name, {"name": name},
                                 f"deprovision (disable): {why}",
                                 before={"permission": cur.user_permissions[key(name)]},
                                 after={"permission": None}, idcs_id=idcs_id))
            touched = True
        if any(key(name) in {key(m) for m in cur.memberships.get(g, [])} for g in managed_keys):
            touched = True
        if touched:
            deprovisioned.append(name)
            why_removed[key(name)] = f"deprovision (disable): {why}"

    # Memberships of managed groups: remove what IDCS does not want, add what is missing.
    renamed = {key(op.params["name"]): op.params["newName"] for op in ops
               if op.kind is OpKind.RENAME_USER}
    for group in want.managed_groups:
        wanted = {key(placed[key(n)]): placed[key(n)]
                  for n in want.memberships.get(group, []) if key(n) in placed}
        current_members = {key(m): m for m in (renamed.get(key(n), n)
                                               for n in cur.memberships.get(key(group), []))}
        for member_key, member in sorted(current_members.items()):
            if member_key in wanted or member_key in protected:
                continue
            if inp.deprovision == "delete" and member_key in why_removed:
                continue  # the delete removes memberships with the user
            reason = why_removed.get(member_key, "not a member in IDCS")
            ops.append(Operation(OpKind.REMOVE_MEMBERSHIP, member, {"user": member, "group": group},
                                 f"{reason}: remove from managed group {group}",
                                 before={"member": True}, after={"member": False}))
        missing = sorted((n for k, n in wanted.items() if k not in current_members), key=key)
        for start in range(0, len(missing), inp.members_per_request):
            chunk = missing[start : start + inp.members_per_request]
            ops.append(Operation(OpKind.ADD_MEMBERS, group, {"group": group, "users": chunk},
                                 "member in IDCS, not in Bitbucket",
                                 after={"members": chunk}))

    if inp.deprovision == "delete":
        gone = {key(n) for n in deprovisioned}
        anchors = {i: n for i, n in anchors.items() if key(n) not in gone}
    return Plan(ops, anchors, deprovisioned)


def _differs(existing: BitbucketUser, user: DesiredUser) -> bool:
    return existing.display_name != user.display_name or existing.email != user.email


def _update(name: str, existing: BitbucketUser, user: DesiredUser, reason: str) -> Operation:
    return Operation(OpKind.UPDATE_USER, name,
                     {"name": name, "displayName": user.display_name, "email": user.email},
                     reason,
                     before={"displayName": existing.display_name, "email": existing.email},
                     after={"displayName": user.display_name, "email": user.email},
                     idcs_id=user.idcs_id)
