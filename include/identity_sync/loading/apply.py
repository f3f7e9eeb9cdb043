"""Apply one batch of plan operations to Bitbucket, idempotently, recording every attempt.

Idempotency (design invariant 2): operations already ``done`` are skipped, so clearing a failed
task re-runs only what did not finish; "already exists" (409 on create) and "already gone"
(entity-missing 404 on remove/delete/revoke) count as done, and so does a create that got no
answer but is found on reading back (the client reads back before resending).

Two stops the plan cannot foresee (invariant 4 and the licence): operations on the service
account or on users of a read-only directory are refused and recorded as ``skipped``; a licence
limit 403 on a create or an addition stops every further create and addition of the run (other
batches see it in the audit store), with the number of seats missing, while everything already
done stays done.

Crash recovery: an operation is marked ``started`` just before it is sent. A worker killed
mid-batch leaves that mark; the next run of the batch records an ``interrupted`` attempt for it
(the audit trail says what happened) and sends it again, where 409 / 404 / read-back make the
repeat harmless. A :class:`~.breaker.CircuitBreaker` stops the batch when Bitbucket keeps failing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..audit.group_commit import GroupCommit
from ..audit.store import AuditStore
from ..bitbucket.client import BitbucketClient, BitbucketError
from ..bitbucket.licence import seats_missing
from ..bitbucket.preflight import PreflightReport
from ..http import ApiError
from ..model import key
from ..planning.operations import MARKER_KINDS, Operation, OpKind, operation_users
from .breaker import BREAKER_OPEN, BreakerSettings, CircuitBreaker

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
    refused: list[str] = field(default_factory=list)  # service account / read-only users
    licence_stop: str | None = None  # why creates and additions stopped, with seats missing
    breaker: str | None = None  # why the circuit breaker stopped the batch
    interrupted: int = 0  # operations a killed worker left in flight, sent again

    def raise_for_failures(self, label: str) -> None:
        if self.breaker:
            raise PermanentApplyError(f"'{label}' stopped: {self.breaker}; {self.failed} "
                                      "operations not done (clear the task once Bitbucket is "
                                      "healthy again)")
        if not self.failed:
            return
        first = "; ".join(([self.licence_stop] if self.licence_stop else []) + self.errors[:3])
        msg = f"{self.failed} of {self.failed + self.done + self.already_done} operations in " \
              f"'{label}' failed: {first}"
        raise (TransientApplyError if self.transient else PermanentApplyError)(msg)


def _already_done(op: Operation, err: BitbucketError) -> bool:
    if op.kind in (OpKind.CREATE_GROUP, OpKind.CREATE_USER):
        return err.already_exists
    if op.kind in (OpKind.DELETE_USER, OpKind.REMOVE_MEMBERSHIP, OpKind.REVOKE_USER_PERMISSION,
                   OpKind.DELETE_GROUP):
        return err.entity_missing
    return False


def _add_members(client: BitbucketClient, op: Operation) -> None:
    group, users = op.params["group"], op.params["users"]
    try:
        client.add_users_to_group(group, users)
    except BitbucketError as err:
        # add-users is all-or-nothing: one missing user fails the lot. Split in halves until the
        # missing ones are alone, so the others still land (about k·log2(n) calls for k bad
        # users), then report exactly who could not be added.
        if not err.entity_missing or len(users) == 1:
            raise
        missing = _add_halves(client, group, users)
        if missing:
            raise BitbucketError(404, f"not added to {group}: {', '.join(missing)} "
                                 f"({err.message})", err.exception_name, "POST",
                                 "/admin/groups/add-users", True) from err


def _add_halves(client: BitbucketClient, group: str, users: list[str]) -> list[str]:
    """Add the two halves of a refused batch; returns the users that do not exist."""
    missing: list[str] = []
    mid = len(users) // 2
    for half in (users[:mid], users[mid:]):
        try:
            client.add_users_to_group(group, half)
        except BitbucketError as err:
            if not err.entity_missing:
                raise
            missing += half if len(half) == 1 else _add_halves(client, group, half)
    return missing


Note = tuple[int | None, str] | None  # (HTTP status, remark) worth keeping in the attempt record


def _create_user(client: BitbucketClient, op: Operation, notify: bool) -> Note:
    p = op.params
    try:
        read_back = client.create_user(p["name"], p["displayName"], p["email"], notify=notify)
    except BitbucketError as err:
        if not err.already_exists:
            raise
        # Exists already (e.g. a create that timed out but landed): converge its details.
        return _converge(client, p, err.status or 409, "user existed")
    if read_back:
        return _converge(client, p, None, "create got no answer; user found on reading back")
    return None


def _converge(client: BitbucketClient, p: dict[str, Any], status: int | None,
              why: str) -> tuple[int | None, str]:
    existing = client.find_user(p["name"])
    if existing and (existing.get("displayName"), existing.get("emailAddress")) != (
            p["displayName"], p["email"]):
        client.update_user(existing["name"], p["displayName"], p["email"])
        return status, f"treated as done: {why}; details converged"
    return status, f"treated as done: {why}"


def _create_group(client: BitbucketClient, name: str) -> Note:
    if client.create_group(name):
        return None, "treated as done: create got no answer; group found on reading back"
    return None


def execute(client: BitbucketClient, op: Operation, *, notify: bool = False) -> Note:
    """Carry out one operation; returns a note when it was done in a non-obvious way."""
    p = op.params
    actions: dict[OpKind, Callable[[], object]] = {
        OpKind.CREATE_GROUP: lambda: _create_group(client, p["name"]),
        OpKind.SET_GROUP_PERMISSION: lambda: client.set_group_permission(p["group"],
                                                                         p["permission"]),
        OpKind.CREATE_USER: lambda: _create_user(client, op, notify),
        OpKind.RENAME_USER: lambda: client.rename_user(p["name"], p["newName"]),
        OpKind.UPDATE_USER: lambda: client.update_user(p["name"], p["displayName"], p["email"]),
        OpKind.ADOPT_USER: lambda: None,  # takes ownership in the audit store only
        OpKind.DISABLE_USER: lambda: None,  # marker: the removals beside it do the work
        OpKind.REACTIVATE_USER: lambda: None,  # marker: the additions beside it do the work
        OpKind.DELETE_GROUP: lambda: client.delete_group(p["name"]),
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


# ---- what the sync must never touch, and the licence stop ---------------------------------

CURRENT_STATE = "bitbucket_state"  # the run artifact read_bitbucket writes (pipeline.CURRENT)
READ_ONLY_USERS = "bitbucket_read_only_users"  # and this one, small: see untouchable_users
LICENCE_STOP = "licence limit reached"
SEAT_KINDS = (OpKind.CREATE_USER, OpKind.ADD_MEMBERS)  # what a licence limit stops


def read_only_users(users: list[dict[str, Any]]) -> dict[str, str]:
    """User key -> why: Bitbucket users of read-only directories (``BitbucketState.to_dict``
    users), which the sync must not touch."""
    return {key(u["name"]): f"from read-only directory {u.get('directory')!r}"
            for u in users if not u.get("mutable", True)}


def untouchable_users(store: AuditStore, client: BitbucketClient, run_id: str) -> dict[str, str]:
    """User key -> why the sync must leave the user alone: the service account itself, and
    users of read-only directories (from the state this run read; none known without it).
    read_bitbucket saves them apart, so a batch need not load the whole state to know them."""
    try:
        out = dict(store.get_artifact(run_id, READ_ONLY_USERS))
    except KeyError:  # a run read before that artifact existed
        try:
            out = read_only_users(store.get_artifact(run_id, CURRENT_STATE).get("users", []))
        except KeyError:
            out = {}
    out[key(client.username)] = "the service account the sync runs as"
    return out


def _user_targets(op: Operation) -> list[str]:
    return operation_users(op.kind, op.target, op.params)


def _licence_stop_elsewhere(store: AuditStore, run_id: str, batch_ops: set[str]) -> str | None:
    """A licence stop recorded by another batch of this run and not since cleared (its
    operation's latest attempt is still the refusal). Retrying this batch tries again."""
    stops = store.failing_with(run_id, f"{LICENCE_STOP}:")
    return next((error for op_id, error in sorted(stops.items()) if op_id not in batch_ops),
                None)


def _licence_message(client: BitbucketClient, failed: Operation, rest: list[Operation],
                     err: BitbucketError) -> str:
    creates = [op.params["name"] for op in [failed, *rest]
               if op.kind is OpKind.CREATE_USER] if failed.kind is OpKind.CREATE_USER else []
    additions: dict[str, list[str]] = {}
    for op in [failed, *rest]:
        if op.kind is OpKind.ADD_MEMBERS:
            additions.setdefault(op.params["group"], []).extend(op.params["users"])
    short = seats_missing(client, creates, additions)
    who = ", ".join(short.users[:5]) + (f" and {len(short.users) - 5} more"
                                        if len(short.users) > 5 else "")
    count = f"{short.missing}" if short.exact else f"up to {short.missing}"
    return (f"{LICENCE_STOP}: Bitbucket refused {failed.describe()} ({err.message}). "
            f"{count} licence seats missing for this batch (users it would license who hold no "
            f"licence yet: {who or 'none'}; fewer if some seats are free). User creation and "
            "additions are stopped for this run; everything already done is kept. Free or add "
            "seats, then clear the failed tasks.")


STARTED, INTERRUPTED = "started", "interrupted"
FINAL_STATUSES = frozenset({"done", "failed", "skipped", "superseded"})
INTERRUPTED_NOTE = ("the worker stopped while this operation was in flight (killed or lost); "
                    "Bitbucket may or may not have carried it out: sent again, where 'already "
                    "exists' / 'already gone' count as done")


def _recover_interrupted(store: AuditStore, run_id: str,
                         ops: list[tuple[Operation, str]]) -> int:
    """Give operations a dead worker left ``started`` an ``interrupted`` attempt row."""
    stuck = [op for op, status in ops if status == STARTED]
    for op in stuck:
        store.record_attempt(run_id, op.op_id, outcome=INTERRUPTED, http_status=None,
                             error=INTERRUPTED_NOTE, started=time.monotonic())
    if stuck:
        log.warning("%d operations were in flight when a previous attempt of this batch "
                    "stopped; sending them again: %s", len(stuck),
                    ", ".join(op.describe() for op in stuck[:5]))
    return len(stuck)


PREFLIGHT = "bitbucket_preflight"  # run artifact: the first batch's preflight, reused


def _preflight(store: AuditStore, client: BitbucketClient, run_id: str) -> None:
    """Pace to Bitbucket's rate limit: the run's first batch reads it (three requests), later
    batches reuse what it found, kept in the audit store, instead of asking again."""
    if client.preflight_report is not None:
        return
    try:
        saved = store.get_artifact(run_id, PREFLIGHT)
    except KeyError:
        report = client.preflight()
        store.put_artifact(run_id, PREFLIGHT, dataclasses.asdict(report), 1)
        return
    rate = saved.get("client_rate")
    client.use_preflight(PreflightReport(**{**saved, "client_rate": tuple(rate) if rate
                                            else None}))


def lanes(ops: list[Operation]) -> list[list[Operation]]:
    """Split a batch into lanes that may run side by side: operations on the same user or
    the same group share a lane and keep their plan order (a rename before an update of the
    new name, a removal before the deletion). Lanes come in the order of their first operation.

    Additions to a group are keyed by the group only, so that a user added to many groups does
    not chain every group into one lane; removals by the user only."""
    parent: dict[str, str] = {}

    def root(k: str) -> str:
        while parent.setdefault(k, k) != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    keys_of = [_lane_keys(op) for op in ops]
    for keys in keys_of:
        for other in keys[1:]:
            parent[root(other)] = root(keys[0])
    grouped: dict[str, list[Operation]] = {}
    for op, keys in zip(ops, keys_of, strict=True):
        grouped.setdefault(root(keys[0]), []).append(op)
    return list(grouped.values())


def _lane_keys(op: Operation) -> list[str]:
    if op.kind is OpKind.ADD_MEMBERS:
        return [f"group:{key(op.params['group'])}"]
    if op.kind is OpKind.REMOVE_MEMBERSHIP:
        return [f"user:{key(op.params['user'])}"]
    users = operation_users(op.kind, op.target, op.params)
    return [f"user:{key(u)}" for u in users] or [f"group:{key(op.target)}"]


class _BatchRun:
    """One batch's operations sent by several threads. Everything they share (the result, the
    circuit breaker, the licence stop) is read and changed under one lock, and both stops are
    checked right before each send, so no new request leaves once either has tripped.

    Slow start: the first operation goes out alone, and so does every operation after a
    failure, until one succeeds. A batch against a sick Bitbucket or with refused credentials
    therefore sends what the sequential apply sent (one request for bad credentials, exactly
    ``max_consecutive_failures`` operations in a 5xx storm), not a volley of ``workers``."""

    def __init__(self, store: AuditStore, client: BitbucketClient, run_id: str,
                 todo: list[Operation], result: BatchResult, guard: CircuitBreaker, *,
                 notify: bool, superseded_users: set[str] | None,
                 untouchable: dict[str, str]) -> None:
        self.store, self.client, self.run_id, self.todo = store, client, run_id, todo
        self.audit = GroupCommit(store, run_id)
        self.result, self.guard, self.notify = result, guard, notify
        self.superseded_users, self.untouchable = superseded_users, untouchable
        self.index = {op.op_id: i for i, op in enumerate(todo)}
        self.lock = threading.Condition()
        self.in_flight = 0
        self.alone = True  # send one at a time: nothing succeeded yet, or the last one failed
        self.aborted = False  # an unexpected error (audit store down): send nothing more

    def lane(self, ops: list[Operation]) -> None:
        try:
            for op in ops:
                if self.aborted:
                    return
                self.one(op)
        except BaseException:
            self.aborted = True
            with self.lock:
                self.lock.notify_all()
            raise

    def _stopped(self, op: Operation) -> str | None:
        """Why ``op`` must not be sent (breaker open, licence stop), counted as failed; the
        caller holds the lock."""
        if self.guard.open:
            self.result.failed += 1
            return f"not attempted: {self.guard.reason or BREAKER_OPEN}"
        if self.result.licence_stop and op.kind in SEAT_KINDS:
            self.result.failed += 1
            return f"not attempted, {LICENCE_STOP} earlier in this run"
        return None

    def _enter(self, op: Operation) -> str | None:
        """Wait for a sending turn (alone while slow-starting); None, or why not to send."""
        with self.lock:
            while self.alone and self.in_flight and not self.aborted:
                self.lock.wait()
            stop = self._stopped(op)
            if stop is None:
                self.in_flight += 1
            return stop

    def _leave(self, ok: bool) -> None:
        with self.lock:
            self.in_flight -= 1
            self.alone = not ok
            self.lock.notify_all()

    def one(self, op: Operation) -> None:
        result = self.result
        started = time.monotonic()
        with self.lock:
            stop = self._stopped(op)
        if stop:
            self._not_sent(op, stop, started)
            return
        targets = _user_targets(op)
        if self.superseded_users:
            later = [u for u in targets if key(u) in self.superseded_users]
            keep = [u for u in targets if key(u) not in self.superseded_users]
            if later and (op.kind is not OpKind.ADD_MEMBERS or not keep):
                self.audit.mark(op.op_id, "superseded")
                with self.lock:
                    result.superseded += 1
                return
            if later:
                op = dataclasses.replace(op, params={**op.params, "users": keep})
                targets = keep
        refused = {u: self.untouchable[key(u)] for u in targets if key(u) in self.untouchable}
        if refused:
            remark = "; ".join(f"{u}: {why}" for u, why in refused.items())
            with self.lock:
                result.refused.append(f"{op.describe()}: {remark}")
            log.warning("refused to touch %s (%s)", ", ".join(refused), op.describe())
            keep = [u for u in targets if u not in refused]
            if op.kind is not OpKind.ADD_MEMBERS or not keep:
                self.audit.record_attempt(op.op_id, outcome="skipped", http_status=None,
                                          error=f"refused: {remark}", started=started)
                return
            op = dataclasses.replace(op, params={**op.params, "users": keep})
        stop = self._enter(op)
        if stop:
            self._not_sent(op, stop, started)
            return
        ok = False
        try:
            ok = self._send(op, list(refused), started)
        finally:
            self._leave(ok)

    def _not_sent(self, op: Operation, why: str, started: float) -> None:
        self.audit.record_attempt(op.op_id, outcome="failed", http_status=None, error=why,
                                  started=started)

    def _send(self, op: Operation, refused: list[str], started: float) -> bool:
        """Send one operation and record its outcome; False when it failed."""
        result = self.result
        if op.kind not in MARKER_KINDS:  # a crash from here on leaves the mark behind
            self.audit.mark(op.op_id, STARTED)
        change = _anchor_change(op)
        anchors = None if change is None else {change[0]: change[1]}
        try:
            note = execute(self.client, op, notify=self.notify)
        except ApiError as err:
            if isinstance(err, BitbucketError) and _already_done(op, err):
                with self.lock:
                    result.done += 1
                    self.guard.success()
                self.audit.record_attempt(op.op_id, outcome="done", http_status=err.status,
                                          error=f"treated as done: {err.message}",
                                          started=started, anchors=anchors)
                return True
            if isinstance(err, BitbucketError) and err.licence_limit and op.kind in SEAT_KINDS:
                self._licence_refused(op, err, started)
                return True  # not Bitbucket failing: the stop keeps further seats from going
            with self.lock:
                result.failed += 1
                result.transient |= err.transient
                result.errors.append(f"{op.describe()}: {err}")
                opened = self.guard.failure(err)
                if opened:
                    result.breaker = opened
            self.audit.record_attempt(op.op_id, outcome="failed", http_status=err.status,
                                      error=str(err), started=started)
            log.error("%s failed: %s", op.describe(), err)
            if opened:
                log.error("%s", opened)
            return False
        http_status, remark = note or (None, None)
        if refused:
            remark = "; ".join(filter(None, [remark, f"refused: {', '.join(refused)}"]))
        with self.lock:
            result.done += 1
            self.guard.success()
        self.audit.record_attempt(op.op_id, outcome="done", http_status=http_status,
                                  error=remark, started=started, anchors=anchors)
        return True

    def _licence_refused(self, op: Operation, err: BitbucketError, started: float) -> None:
        """The first licence refusal names the seats missing and stops creates and additions;
        one that was already in flight when it came is recorded with the same message."""
        with self.lock:
            first = self.result.licence_stop is None
            self.result.failed += 1
        if first:
            rest = [o for o in self.todo[self.index[op.op_id] + 1:] if o.kind in SEAT_KINDS]
            message = _licence_message(self.client, op, rest, err)
            with self.lock:
                self.result.licence_stop = self.result.licence_stop or message
            log.error("%s", message)
        self.audit.record_attempt(op.op_id, outcome="failed", http_status=err.status,
                                  error=self.result.licence_stop or str(err), started=started)


def apply_batch(store: AuditStore, client: BitbucketClient, run_id: str, phase: str, batch: int,
                *, notify: bool = False, superseded_by: str | None = None,
                superseded_users: set[str] | None = None,
                breaker: BreakerSettings | None = None,
                workers: int | None = None) -> BatchResult:
    """Run the batch's unfinished operations; never raises for one operation.

    Operations go out ``workers`` at a time (default: the client's ``max_concurrency``), in
    :func:`lanes`: those on the same user or group one after another in plan order, the others
    side by side. ``superseded_users`` (user keys) were planned for by a newer run: operations
    on them are left to it (marked ``superseded``), and they are dropped from additions to a
    group."""
    result = BatchResult()
    guard = CircuitBreaker(breaker or BreakerSettings())
    ops = store.batch_operations(run_id, phase, batch)
    if superseded_by:
        pending = [op.op_id for op, status in ops if status not in ("done",)]
        store.mark_operations(run_id, pending, "superseded")
        result.superseded = len(pending)
        log.warning("run %s planned after this one: %d operations left to it", superseded_by,
                    len(pending))
        return result
    result.interrupted = _recover_interrupted(store, run_id, ops)
    todo = [op for op, status in ops if status not in ("done", "superseded")]
    result.already_done = sum(status == "done" for _, status in ops)
    if not todo:
        return result
    _preflight(store, client, run_id)
    result.licence_stop = _licence_stop_elsewhere(store, run_id, {op.op_id for op in todo})
    run = _BatchRun(store, client, run_id, todo, result, guard, notify=notify,
                    superseded_users=superseded_users,
                    untouchable=untouchable_users(store, client, run_id))
    parallel = lanes(todo)
    size = max(1, min(workers or client.settings.max_concurrency, len(parallel)))
    if size == 1:
        for lane in parallel:
            run.lane(lane)
    else:
        with ThreadPoolExecutor(size, thread_name_prefix=f"apply-{phase}-{batch}") as pool:
            for future in [pool.submit(run.lane, lane) for lane in parallel]:
                future.result()
    log.info("batch %s/%d: %d done, %d already done, %d failed, %d refused%s", phase, batch,
             result.done, result.already_done, result.failed, len(result.refused),
             f"; stopped: {result.breaker}" if result.breaker else "")
    return result


def undone_operations(store: AuditStore, run_id: str, limit: int = 5) -> str:
    """The operations a run left undone, named, for its one-line failure message."""
    undone = [op for op in store.plan(run_id)
              if op["status"] not in ("done", "skipped", "superseded")]
    if not undone:
        return ""
    names = [_describe_row(op) for op in undone[:limit]]
    more = f" and {len(undone) - limit} more" if len(undone) > limit else ""
    return f"{len(undone)} operations not done ({', '.join(names)}{more})"


def _describe_row(row: dict[str, Any]) -> str:
    op = Operation(kind=row["kind"], target=row["target"], params=row["params"],
                   reason=row["reason"], op_id=row["op_id"])
    return f"{op.describe()} [{row['status']}]"


def close_unfinished(store: AuditStore, run_id: str) -> int:
    """At the end of a run, give every operation still without a final status one: never
    attempted (an earlier phase failed, so its batch never ran) or left in flight by a worker
    that died. Each gets a ``failed`` attempt saying which; clearing the run retries them."""
    closed = 0
    for row in store.plan(run_id):
        if row["status"] in FINAL_STATUSES:
            continue
        note = (INTERRUPTED_NOTE if row["status"] == STARTED
                else "not attempted: the run stopped before this operation's batch ran")
        store.record_attempt(run_id, row["op_id"], outcome="failed", http_status=None,
                             error=note, started=time.monotonic())
        closed += 1
    return closed
