"""Plan operations: what the apply will do, each with its reason, grouped into batches."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class OpKind(StrEnum):
    CREATE_GROUP = "create_group"
    SET_GROUP_PERMISSION = "set_group_permission"
    CREATE_USER = "create_user"
    RENAME_USER = "rename_user"
    UPDATE_USER = "update_user"
    ADOPT_USER = "adopt_user"
    DELETE_USER = "delete_user"
    REMOVE_MEMBERSHIP = "remove_membership"
    REVOKE_USER_PERMISSION = "revoke_user_permission"
    ADD_MEMBERS = "add_members"
    DISABLE_USER = "disable_user"
    REACTIVATE_USER = "reactivate_user"
    DELETE_GROUP = "delete_group"


# Kinds that record a decision in the audit trail; the API calls are the operations beside them.
MARKER_KINDS = frozenset({OpKind.ADOPT_USER, OpKind.DISABLE_USER, OpKind.REACTIVATE_USER})


class Phase(StrEnum):
    """Apply order. Removals run before additions so freed licence seats can be reused."""

    GROUPS = "groups"
    USERS = "users"
    REMOVALS = "removals"
    ADDITIONS = "additions"


PHASE_OF: dict[OpKind, Phase] = {
    OpKind.CREATE_GROUP: Phase.GROUPS,
    # After GROUPS, never beside it: batches of one phase run in parallel, so a permission in
    # another batch than its group's creation would meet a 404.
    OpKind.SET_GROUP_PERMISSION: Phase.USERS,
    OpKind.CREATE_USER: Phase.USERS,
    OpKind.RENAME_USER: Phase.USERS,
    OpKind.UPDATE_USER: Phase.USERS,
    OpKind.ADOPT_USER: Phase.USERS,
    OpKind.DELETE_USER: Phase.REMOVALS,
    OpKind.REMOVE_MEMBERSHIP: Phase.REMOVALS,
    OpKind.REVOKE_USER_PERMISSION: Phase.REMOVALS,
    OpKind.ADD_MEMBERS: Phase.ADDITIONS,
    OpKind.DISABLE_USER: Phase.REMOVALS,
    OpKind.REACTIVATE_USER: Phase.USERS,
    OpKind.DELETE_GROUP: Phase.REMOVALS,
}
PHASE_ORDER = list(Phase)


@dataclass
class Operation:
    """One change to Bitbucket. ``op_id`` is stable for the same change, so retries upsert."""

    kind: OpKind
    target: str
    params: dict[str, Any]
    reason: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    idcs_id: str | None = None
    op_id: str = ""
    phase: Phase = field(init=False)
    batch: int = 0
    # The identity chain the operation belongs to (``user:<IDCS id>`` / ``group:<key>``), set at
    # planning; a lane is never split across batches. ``identities``: the identities it changes
    # (for add_members one per user, in the order of ``params["users"]``). Neither is part of
    # ``op_id``: they say who an operation is for, not what it does.
    lane: str = ""
    identities: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kind = OpKind(self.kind)
        self.phase = PHASE_OF[self.kind]
        if not self.op_id:
            digest = json.dumps([self.kind, self.target, self.params], sort_keys=True)
            self.op_id = f"{self.kind}:{hashlib.sha1(digest.encode()).hexdigest()[:16]}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"], data["phase"] = str(self.kind), str(self.phase)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operation:
        data = {k: v for k, v in data.items() if k != "phase"}
        return cls(**data)

    def describe(self) -> str:
        if self.kind is OpKind.ADD_MEMBERS:
            return f"add {len(self.params['users'])} → {self.target}"
        if self.kind is OpKind.REMOVE_MEMBERSHIP:
            return f"remove {self.params['user']} from {self.params['group']}"
        if self.kind is OpKind.RENAME_USER:
            return f"rename {self.params['name']} → {self.params['newName']}"
        return f"{self.kind.value.replace('_', ' ')} {self.target}"


@dataclass(frozen=True)
class BatchRef:
    """What a mapped apply task receives through XCom: small, no operation bodies."""

    run_id: str
    phase: str
    batch: int
    size: int
    label: str
    batches: int = 1  # batches in its phase: how many apply tasks of it may run at once

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PARALLEL_SLOTS = 4  # apply batches that run at once (the bitbucket_api pool's slots)


def assign_batches(ops: list[Operation], batch_size: int, max_batches: int,
                   slots: int = PARALLEL_SLOTS) -> None:
    """Number batches per phase: at most ``batch_size`` operations each (grown so no phase
    exceeds ``max_batches``: Airflow fails a mapping of more than ``[core] max_map_length``
    items), as many batches as a multiple of ``slots`` and about equal in size, so the phase
    ends when its parallel slots do: 965 creates in 8 batches of about 121, not 4 × 200 + 165
    where the fifth runs alone. A phase that fits one batch stays one batch.

    Batches hold whole lanes (``Operation.lane``: one identity's dependent operations), since
    the batches of a phase run at once: a rename and the update of the new name, split by
    position, could run in either order. Lanes are laid end to end in plan order and each goes
    whole into the batch where its first operation falls; a long lane makes its batch bigger."""
    for phase in PHASE_ORDER:
        phase_ops = [op for op in ops if op.phase is phase]
        count = batch_count(len(phase_ops), batch_size, max_batches, slots)
        lanes: dict[str, list[Operation]] = {}
        for index, op in enumerate(phase_ops):
            lanes.setdefault(op.lane or f"#{index}", []).append(op)
        start = 0
        for lane in lanes.values():  # a lane goes where its first operation falls by position
            for op in lane:
                op.batch = start * count // len(phase_ops)
            start += len(lane)


def batch_count(n: int, batch_size: int, max_batches: int, slots: int = PARALLEL_SLOTS) -> int:
    """How many batches ``n`` operations of one phase make (see :func:`assign_batches`)."""
    if n == 0:
        return 0
    size = max(batch_size, -(-n // max_batches))
    count = -(-n // size)
    if count > 1 and slots > 1:
        rounded = -(-count // slots) * slots
        count = min(rounded, max_batches, n)
    return count


def batch_refs(run_id: str, ops: list[Operation]) -> dict[str, list[dict[str, Any]]]:
    """Batch descriptors per phase, labelled by what they do (shown as map index names)."""
    refs: dict[str, list[dict[str, Any]]] = {str(p): [] for p in PHASE_ORDER}
    grouped: dict[tuple[str, int], list[Operation]] = {}
    for op in ops:
        grouped.setdefault((str(op.phase), op.batch), []).append(op)
    per_phase: dict[str, int] = {}
    for phase, _ in grouped:
        per_phase[phase] = per_phase.get(phase, 0) + 1
    for (phase, batch), members in sorted(grouped.items()):
        refs[phase].append(BatchRef(run_id, phase, batch, len(members), _label(members),
                                    per_phase[phase]).to_dict())
    return refs


def _label(ops: list[Operation]) -> str:
    if len(ops) == 1:
        return ops[0].describe()
    kinds: dict[str, int] = {}
    for op in ops:
        kinds[op.kind.value] = kinds.get(op.kind.value, 0) + 1
    if len(kinds) == 1 and ops[0].kind is OpKind.ADD_MEMBERS:
        users = sum(len(op.params["users"]) for op in ops)
        groups = {op.target for op in ops}
        where = next(iter(groups)) if len(groups) == 1 else f"{len(groups)} groups"
        return f"add {users} → {where}"
    return ", ".join(f"{n} × {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))


USER_TARGET_KINDS = frozenset({
    OpKind.CREATE_USER, OpKind.RENAME_USER, OpKind.UPDATE_USER, OpKind.ADOPT_USER,
    OpKind.DELETE_USER, OpKind.REVOKE_USER_PERMISSION, OpKind.DISABLE_USER,
    OpKind.REACTIVATE_USER,
})


def operation_users(kind: str, target: str, params: dict[str, Any]) -> list[str]:
    """The Bitbucket users an operation changes (none for group-level operations)."""
    kind = OpKind(kind)
    if kind is OpKind.ADD_MEMBERS:
        return list(params["users"])
    if kind is OpKind.REMOVE_MEMBERSHIP:
        return [params["user"]]
    if kind is OpKind.RENAME_USER:
        return [params["name"], params["newName"]]
    return [target] if kind in USER_TARGET_KINDS else []
