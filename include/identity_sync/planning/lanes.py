"""Who each operation is for: its identities and its lane, computed once at planning.

An identity is ``user:<IDCS id>`` (``user~<name>`` for a Bitbucket user the store has no IDCS id
for) or ``group:<key>`` (for a group's deletion); per-identity convergence compares them between
runs
(:mod:`identity_sync.audit.identity_state`). A lane is the chain of one identity's dependent
operations (adopt → rename → update; revoke → removals; a group's additions): it keeps its plan
order and is never split across batches (:func:`.operations.assign_batches`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..audit.identity_state import group_identity, unanchored_identity, user_identity
from ..model import key
from .operations import USER_TARGET_KINDS, Operation, OpKind


def annotate(ops: list[Operation], ids_by_name: Mapping[str, str]) -> None:
    """Set ``identities`` and ``lane`` on every operation. ``ids_by_name``: Bitbucket user key
    -> IDCS id, for names before and after this plan (anchors, renames, creations)."""

    def user(name: str, idcs_id: str | None = None) -> str:
        found = idcs_id or ids_by_name.get(key(name))
        return user_identity(found) if found else unanchored(name)

    def unanchored(name: str) -> str:
        return unanchored_identity(key(name))

    for op in ops:
        p = op.params
        if op.kind is OpKind.ADD_MEMBERS:
            op.identities = [user(u) for u in p["users"]]
            op.lane = group_identity(p["group"])
        elif op.kind is OpKind.REMOVE_MEMBERSHIP:
            op.identities = [user(p["user"])]
            op.lane = op.identities[0]
        elif op.kind is OpKind.RENAME_USER:
            op.identities = [user(p["newName"], op.idcs_id)]
            op.lane = op.identities[0]
        elif op.kind in USER_TARGET_KINDS:
            op.identities = [user(op.target, op.idcs_id)]
            op.lane = op.identities[0]
        elif op.kind is OpKind.DELETE_GROUP:
            op.identities = [group_identity(op.target)]
            op.lane = op.identities[0]
        else:  # creating a group, setting its permission: every run wants the same (the rules
            # decide, not IDCS data), and both are idempotent, so no run leaves them to another
            op.identities = []
            op.lane = group_identity(op.target)


def names_to_ids(*anchor_maps: Mapping[str, str]) -> dict[str, str]:
    """Bitbucket user key -> IDCS id from anchor maps (IDCS id -> Bitbucket name)."""
    out: dict[str, str] = {}
    for anchors in anchor_maps:
        out.update({key(name): idcs_id for idcs_id, name in anchors.items()})
    return out
