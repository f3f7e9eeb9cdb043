"""Apply one batch of plan operations to Bitbucket, idempotently, recording every attempt.

Idempotency (design invariant 2): operations already ``done`` are skipped, so clearing a failed
task re-runs only what did not finish; "already exists" (409 on create) and "already gone"
(entity-missing 404 on remove/delete/revoke) count as done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..audit.store import AuditStore
from ..bitbucket.client import BitbucketClient, BitbucketError
from ..http import ApiError
from ..planning.operations import Operation, OpKind

log = logging.getLogger(__name__)


class ApplyError(RuntimeError):
    """Some operations of a batch failed; ``transient`` says whether a retry may fix them."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class TransientApplyError(ApplyError):
    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class PermanentApplyError(ApplyError):
    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass
class BatchResult:
    done: int = 0
    already_done: int = 0
    failed: int = 0
    superseded: int = 0
    errors: list[str] = field(default_factory=list)
    transient: bool = False

    def raise_for_failures(self, label: str) -> None:
        if not self.failed:
            return
        first = "; ".join(self.errors[:3])
        msg = f"{self.failed} of {self.failed + self.done + self.already_done} operations in " \
              f"'{label}' failed: {first}"
        raise (TransientApplyError if self.transient else PermanentApplyError)(msg)


def _already_done(op: Operation, err: BitbucketError) -> bool:
    if op.kind in (OpKind.CREATE_GROUP, OpKind.CREATE_USER):
        return err.already_exists
    if op.kind in (OpKind.DELETE_USER, OpKind.REMOVE_MEMBERSHIP, OpKind.REVOKE_USER_PERMISSION):
        return err.entity_missing
    return False


def _add_members(client: BitbucketClient, op: Operation) -> None:
    group, users = op.params["group"], op.params["users"]
    try:
        client.add_users_to_group(group, users)
    except BitbucketError as err:
        # add-users is all-or-nothing: one missing user fails the lot. Add one by one so the
        # others still land, then report exactly who could not be added.
        if not err.entity_missing or len(users) == 1:
            raise
        missing = []
        for user in users:
            try:
                client.add_users_to_group(group, [user])
            except BitbucketError as one:
                if not one.entity_missing:
                    raise
                missing.append(user)
        if missing:
            raise BitbucketError(404, f"not added to {group}: {', '.join(missing)} "
                                 f"({err.message})", err.exception_name, "POST",
                                 "/admin/groups/add-users", True) from err


Note = tuple[int, str] | None  # (HTTP status, remark) worth keeping in the attempt record


def _create_user(client: BitbucketClient, op: Operation, notify: bool) -> Note:
    p = op.params
    try:
        client.create_user(p["name"], p["displayName"], p["email"], notify=notify)
    except BitbucketError as err:
        if not err.already_exists:
            raise
        # Exists already (e.g. a create that timed out but landed): converge its details.
        existing = client.find_user(p["name"])
        if existing and (existing.get("displayName"), existing.get("emailAddress")) != (
                p["displayName"], p["email"]):
            client.update_user(existing["name"], p["displayName"], p["email"])
            return err.status or 409, "treated as done: user existed; details converged"
        return err.status or 409, "treated as done: user already existed"
    return None


def execute(client: BitbucketClient, op: Operation, *, notify: bool = False) -> Note:
    """Carry out one operation; returns a note when it was done in a non-obvious way."""
    p = op.params
    actions: dict[OpKind, Callable[[], object]] = {
        OpKind.CREATE_GROUP: lambda: client.create_group(p["name"]),
        OpKind.SET_GROUP_PERMISSION: lambda: client.set_group_permission(p["group"],
                                                                         p["permission"]),
        OpKind.CREATE_USER: lambda: _create_user(client, op, notify),
        OpKind.RENAME_USER: lambda: client.rename_user(p["name"], p["newName"]),
        OpKind.UPDATE_USER: lambda: client.update_user(p["name"], p["displayName"], p["email"]),
        OpKind.ADOPT_USER: lambda: None,  # takes ownership in the audit store only
        OpKind.DELETE_USER: lambda: client.delete_user(p["name"]),
        OpKind.REMOVE_MEMBERSHIP: lambda: client.remove_user_from_group(p["user"], p["group"]),
        OpKind.REVOKE_USER_PERMISSION: lambda: client.revoke_user_permission(p["name"]),
        OpKind.ADD_MEMBERS: lambda: _add_members(client, op),
    }
    result = actions[op.kind]()
    return result if isinstance(result, tuple) else None


def _anchor_change(op: Operation) -> tuple[str, str | None] | None:
    """(IDCS id, Bitbucket name or None to drop) that a finished operation implies."""
    if op.idcs_id is None:
        return None
    if op.kind in (OpKind.CREATE_USER, OpKind.ADOPT_USER):
        return op.idcs_id, op.params["name"]
    if op.kind is OpKind.RENAME_USER:
        return op.idcs_id, op.params["newName"]
    if op.kind is OpKind.DELETE_USER:
        return op.idcs_id, None
    return None


def apply_batch(store: AuditStore, client: BitbucketClient, run_id: str, phase: str, batch: int,
                *, notify: bool = False, superseded_by: str | None = None) -> BatchResult:
    """Run the batch's unfinished operations in plan order; never raises for one operation."""
    result = BatchResult()
    ops = store.batch_operations(run_id, phase, batch)
    if superseded_by:
        pending = [op.op_id for op, status in ops if status not in ("done",)]
        store.mark_operations(run_id, pending, "superseded")
        result.superseded = len(pending)
        log.warning("run %s planned after this one: %d operations left to it", superseded_by,
                    len(pending))
        return result
    for op, status in ops:
        if status == "done":
            result.already_done += 1
            continue
        started = time.monotonic()
        try:
            note = execute(client, op, notify=notify)
        except ApiError as err:
            if isinstance(err, BitbucketError) and _already_done(op, err):
                store.record_attempt(run_id, op.op_id, outcome="done", http_status=err.status,
                                     error=f"treated as done: {err.message}", started=started)
                result.done += 1
            else:
                store.record_attempt(run_id, op.op_id, outcome="failed", http_status=err.status,
                                     error=str(err), started=started)
                result.failed += 1
                result.transient |= err.transient
                result.errors.append(f"{op.describe()}: {err}")
                log.error("%s failed: %s", op.describe(), err)
                continue
        else:
            http_status, remark = note or (None, None)
            store.record_attempt(run_id, op.op_id, outcome="done", http_status=http_status,
                                 error=remark, started=started)
            result.done += 1
        change = _anchor_change(op)
        if change is not None:
            idcs_id, name = change
            if name is None:
                store.drop_anchors([idcs_id])
            else:
                store.save_anchors(run_id, {idcs_id: name})
    log.info("batch %s/%d: %d done, %d already done, %d failed", phase, batch, result.done,
             result.already_done, result.failed)
    return result
