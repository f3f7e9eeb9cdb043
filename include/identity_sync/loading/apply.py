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

from ..audit import identity_state
from ..audit.group_commit import GroupCommit
from ..audit.store import AuditStore
from ..bitbucket.client import BitbucketClient, BitbucketError
from ..bitbucket.licence import seats_missing
from ..bitbucket.preflight import PreflightReport
from ..http import ApiError
from ..model import key
from ..planning.operations import MARKER_KINDS, Operation, OpKind, operation_users
from ..planning.planner import ELEVATED_PERMISSIONS
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


class ConflictError(ApplyError):
    """The operation meets an object the sync cannot prove is its own (a name taken by another
    account or group): recorded as ``conflict``, nothing changed in Bitbucket, no anchor written.
    Final and not a failure: neither a retry nor Bitbucket being healthier would change it."""

    def __init__(self, reason: str, *, status: int | None = 409) -> None:
        super().__init__(reason, transient=False)
        self.reason, self.status = reason, status  # status: Bitbucket's answer (None: read back)


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
    conflicts: int = 0  # operations that met an object not provably the sync's (not failures)

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
    """"Already gone" counts as done. "Already exists" (409 on a create) is decided by
    :func:`_create_user` and :func:`_create_group`: done only when provably ours."""
    if op.kind in (OpKind.DELETE_USER, OpKind.REMOVE_MEMBERSHIP, OpKind.REVOKE_USER_PERMISSION,
                   OpKind.DELETE_GROUP):
        return err.entity_missing
    return False


def _missing(err: BitbucketError, what: str) -> bool:
    """An entity-missing 404 whose exception names ``what`` (``User`` or ``Group``)."""
    return err.entity_missing and (err.exception_name or "").endswith(f"NoSuch{what}Exception")


def _add_members(client: BitbucketClient, op: Operation) -> None:
    group, users = op.params["group"], op.params["users"]
    try:
        client.add_users_to_group(group, users)
    except BitbucketError as err:
        # add-users is all-or-nothing: one missing user fails the lot. Split in halves until the
        # missing ones are alone, so the others still land (about k·log2(n) calls for k bad
        # users), then report exactly who could not be added. A missing group (or any other
        # 404) fails at once: no half of the list could land.
        if not _missing(err, "User") or len(users) == 1:
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
            if not _missing(err, "User"):
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
        # The name exists (a create that timed out but landed, or somebody else's account).
        return _converge(client, op, err.status or 409, "user existed")
    if read_back:
        return _converge(client, op, None, "create got no answer; user found on reading back")
    return None


def _converge(client: BitbucketClient, op: Operation, status: int | None,
              why: str) -> tuple[int | None, str]:
    """An account named like the one ``op`` creates exists: done if it is provably ours (its
    details converged only when it is anchored to this IDCS user), else :class:`ConflictError`
    (design invariant 2: a collision is a conflict, never a takeover)."""
    p = op.params
    own = p.get("ownership") or {}
    existing = client.find_user(p["name"])
    if existing is None:
        raise ConflictError(f"Bitbucket says user {p['name']!r} exists ({why}) but it cannot be "
                            "read back: not taken as ours", status=status)
    name = existing["name"]
    owner = own.get("anchored_to")
    if owner and op.idcs_id and owner == op.idcs_id:
        if (existing.get("displayName"), existing.get("emailAddress")) != (
                p["displayName"], p["email"]):
            client.update_user(name, p["displayName"], p["email"])
            return status, f"treated as done: {why}; anchored to this IDCS user; details converged"
        return status, f"treated as done: {why}; anchored to this IDCS user"
    problems = []
    if owner:
        problems.append(f"it is anchored to IDCS user {owner}")
    if not (existing.get("mutableDetails", True) and existing.get("mutableGroups", True)):
        problems.append(f"it is in the read-only directory {existing.get('directoryName')!r}")
    if key(name) == key(client.username):
        problems.append("it is the service account the sync runs as")
    if own.get("adopt", "username_and_email") == "none":
        problems.append("adoption is off (users.adopt: none)")
    wanted = (p["name"], p["displayName"], p["email"])
    found = (name, existing.get("displayName") or "", existing.get("emailAddress") or "")
    if tuple(map(key, wanted)) != tuple(map(key, found)):
        problems.append(f"its details differ (display name {found[1]!r}, e-mail {found[2]!r})")
    if not problems and not own.get("allow_privileged"):
        held = _privilege(client, name)
        if held:
            problems.append(f"it holds {held} (users.allow_privileged)")
    if problems:
        raise ConflictError(f"Bitbucket user {name!r} exists ({why}) and is not provably the "
                            f"sync's: {'; '.join(problems)}; left as it is, no anchor written",
                            status=status)
    return status, f"treated as done: {why}; same details, internal directory, not privileged"


def _privilege(client: BitbucketClient, name: str) -> str | None:
    """The PROJECT_CREATE / ADMIN / SYS_ADMIN an account holds, directly or through a group;
    read from Bitbucket (only when a create met an existing account, so cost does not matter)."""
    for entry in client.user_permissions(name_filter=name):
        if key(entry["user"]["name"]) == key(name) and \
                entry["permission"] in ELEVATED_PERMISSIONS:
            return str(entry["permission"])
    groups = {key(g["name"]) for g in client.user_groups(name)}
    if groups:
        for entry in client.group_permissions():
            group = entry["group"]["name"]
            if key(group) in groups and entry["permission"] in ELEVATED_PERMISSIONS:
                return f"{entry['permission']} through group {group!r}"
    return None


def _create_group(client: BitbucketClient, op: Operation,
                  is_ours: Callable[[str], bool] | None = None) -> Note:
    """Create a group. 409 counts as done only when an earlier unanswered attempt of this very
    request may have created it (the read-back before resending failed), or when ``is_ours``
    says another run of the sync created it; otherwise the group is somebody else's:
    :class:`ConflictError`, and the sync does not manage it."""
    name = op.params["name"]
    unanswered: list[bool] = []
    try:
        if client.create_group(name, on_read_back=lambda: unanswered.append(True)):
            return None, "treated as done: create got no answer; group found on reading back"
    except BitbucketError as err:
        if not err.already_exists:
            raise
        if unanswered:
            return err.status, ("treated as done: an unanswered attempt of this create had "
                                "landed (409 on sending it again)")
        if is_ours is not None and is_ours(name):
            return err.status, ("treated as done: the group exists; another run of the sync "
                                "created it (owned_groups)")
        raise ConflictError(
            f"Bitbucket group {name!r} already exists and the sync did not create it: left "
            "alone, not managed (list it in groups.adopt_existing to let the sync manage it)"
        ) from err
    return None


OWNED_RECHECKS, OWNED_RECHECK_SECONDS = 5, 0.2


def _created_by_sync(store: AuditStore, name: str) -> bool:
    """Whether a group whose create met a 409 is the sync's own: another run of it created the
    group (runs overlap). That run records the group right after its create lands, so a 409
    arriving in between is checked again a few times before it is called a conflict."""
    for attempt in range(OWNED_RECHECKS):
        if key(name) in store.owned_groups([name]):
            return True
        if attempt < OWNED_RECHECKS - 1:
            time.sleep(OWNED_RECHECK_SECONDS)
    return False


def execute(client: BitbucketClient, op: Operation, *, notify: bool = False,
            group_is_ours: Callable[[str], bool] | None = None) -> Note:
    """Carry out one operation; returns a note when it was done in a non-obvious way.
    ``group_is_ours`` tells whether an existing group is one the sync created."""
    p = op.params
    actions: dict[OpKind, Callable[[], object]] = {
        OpKind.CREATE_GROUP: lambda: _create_group(client, op, group_is_ours),
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
    read_bitbucket saves them apart, so a batch need not load the whole state to know them.
    Also the accounts this run's creates met but could not prove its own (``conflict``): what
    the plan meant to add to groups was the account it would have created, not that one."""
    try:
        out = dict(store.get_artifact(run_id, READ_ONLY_USERS))
    except KeyError:  # a run read before that artifact existed
        try:
            out = read_only_users(store.get_artifact(run_id, CURRENT_STATE).get("users", []))
        except KeyError:
            out = {}
    for name in store.conflicted_creates(run_id):
        out[key(name)] = "an existing account its create met, not the sync's (conflict)"
    out[key(client.username)] = "the service account the sync runs as"
    return out


def _only_users(op: Operation, keep: list[str]) -> Operation:
    """An add_members operation for only the ``keep`` users (its identities kept aligned)."""
    wanted = {key(u) for u in keep}
    kept = [n for n, user in enumerate(op.params["users"]) if key(user) in wanted]
    return dataclasses.replace(
        op, params={**op.params, "users": [op.params["users"][n] for n in kept]},
        identities=[op.identities[n] for n in kept] if op.identities else [])


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
# Final statuses that leave nothing to do: done, refused, left to a newer run, or reported as a
# conflict. ``failed`` is final too, but a cleared task retries it.
SETTLED_STATUSES = frozenset({"done", "skipped", "superseded", "conflict"})
FINAL_STATUSES = SETTLED_STATUSES | {"failed"}
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
    if op.lane:  # planned with lanes: one identity's chain, whatever names it goes through
        return [op.lane]
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
                 notify: bool, untouchable: dict[str, str]) -> None:
        self.store, self.client, self.run_id, self.todo = store, client, run_id, todo
        self.audit = GroupCommit(store, run_id)
        self.result, self.guard, self.notify = result, guard, notify
        self.untouchable = untouchable
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
            op = _only_users(op, keep)
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
        claimed: tuple[str, ...] = ()
        if op.identities:  # mark and claim in one transaction (invariant 3)
            lost = self.audit.mark(op.op_id, STARTED, claim=list(op.identities))
            claimed = tuple(i for i in op.identities if i not in lost)
            if lost:
                op = self._left_to_newer(op, lost, claimed, started)
                if op is None:
                    return True
        elif op.kind not in MARKER_KINDS:  # a crash from here on leaves the mark behind
            self.audit.mark(op.op_id, STARTED)
        change = _anchor_change(op)
        anchors = None if change is None else {change[0]: change[1]}
        try:
            note = execute(self.client, op, notify=self.notify,
                           group_is_ours=lambda name: _created_by_sync(self.store, name))
        except ConflictError as err:  # final, not a failure: the batch goes on (invariant 2)
            with self.lock:
                result.conflicts += 1
                self.guard.success()  # Bitbucket answered; nothing to hold against it
            self.audit.record_attempt(op.op_id, outcome="conflict", http_status=err.status,
                                      error=err.reason, started=started, release=claimed)
            log.warning("%s: conflict: %s", op.describe(), err.reason)
            return True
        except ApiError as err:
            if isinstance(err, BitbucketError) and _already_done(op, err):
                with self.lock:
                    result.done += 1
                    self.guard.success()
                self.audit.record_attempt(op.op_id, outcome="done", http_status=err.status,
                                          error=f"treated as done: {err.message}",
                                          started=started, anchors=anchors, release=claimed)
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
                                      error=str(err), started=started, release=claimed)
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
        if op.kind is OpKind.CREATE_GROUP:  # the sync's from now on (invariant 4); recorded
            # first, so a run whose create of it meets a 409 right after finds it owned
            self.store.record_owned_group(op.params["name"], self.run_id)
        self.audit.record_attempt(op.op_id, outcome="done", http_status=http_status,
                                  error=remark, started=started, anchors=anchors,
                                  release=claimed)
        return True

    def _left_to_newer(self, op: Operation, lost: set[str], claimed: tuple[str, ...],
                       started: float) -> Operation | None:
        """Some of ``op``'s identities are held by a run that planned from newer IDCS data:
        leave them to it. Returns what is left to send (additions keep their other users), or
        None when the whole operation is superseded (recorded with the runs that hold it)."""
        holders = identity_state.holders(self.store, self.run_id, lost)
        runs = ", ".join(sorted(set(holders.values()))) or "a newer run"
        keep = [u for u, i in zip(op.params["users"], op.identities, strict=True)
                if i not in lost] if op.kind is OpKind.ADD_MEMBERS else []
        with self.lock:
            self.result.superseded += 1 if not keep else 0
        if not keep:
            self.audit.record_attempt(
                op.op_id, outcome="superseded", http_status=None, started=started,
                error=f"superseded: {runs} planned for this identity from newer IDCS data",
                release=claimed)
            return None
        gone = [u for u, i in zip(op.params["users"], op.identities, strict=True) if i in lost]
        log.info("%s: %d users left to %s (planned from newer IDCS data): %s", op.describe(),
                 len(gone), runs, ", ".join(gone[:5]))
        return _only_users(op, keep)

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
                *, notify: bool = False, breaker: BreakerSettings | None = None,
                workers: int | None = None) -> BatchResult:
    """Run the batch's unfinished operations; never raises for one operation.

    Operations go out ``workers`` at a time (default: the client's ``max_concurrency``), in
    :func:`lanes`: those on the same user or group one after another in plan order, the others
    side by side. Each operation claims its identities as it is marked started; an identity a
    run with newer IDCS data has planned for is left to that run (``superseded``), and such
    users are dropped from additions to a group (:mod:`identity_sync.audit.identity_state`)."""
    result = BatchResult()
    guard = CircuitBreaker(breaker or BreakerSettings())
    ops = store.batch_operations(run_id, phase, batch)
    result.interrupted = _recover_interrupted(store, run_id, ops)
    todo = [op for op, status in ops if status not in ("done", "superseded", "conflict")]
    result.already_done = sum(status == "done" for _, status in ops)
    if not todo:
        return result
    _preflight(store, client, run_id)
    result.licence_stop = _licence_stop_elsewhere(store, run_id, {op.op_id for op in todo})
    run = _BatchRun(store, client, run_id, todo, result, guard, notify=notify,
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
              if op["status"] not in SETTLED_STATUSES]
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
