"""Per-identity convergence wired into the stages (design invariant 3).

``read_bitbucket`` takes the run's identities before it reads (:func:`take_identities`), so
what it reads is final for them; ``plan`` gives every operation its identities and lane and
leaves to newer runs what they hold (:func:`hand_over`); the apply claims identities per
operation (:mod:`.loading.apply`). The rules are in :mod:`.audit.identity_state`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from .audit import identity_state
from .audit.queries import aware
from .audit.store import AuditStore, utcnow
from .model import DesiredState
from .planning.operations import Operation

log = logging.getLogger(__name__)


def data_as_of(store: AuditStore, run_id: str) -> datetime:
    """How old the run's IDCS data is: when its extract began (its start, for runs recorded
    before the extract said so)."""
    run = store.get_run(run_id) or {}
    return aware(run.get("data_as_of") or run.get("started_at")) or utcnow()


def run_identities(desired: DesiredState, anchors: Mapping[str, str],
                   groups: Iterable[str]) -> set[str]:
    """What a run syncs: every user it maps (active or not), every anchored user in its scope
    (those may be deprovisioned) and the ``groups`` it may delete (a run over the whole
    organisation: every group it reads)."""
    users = {u.idcs_id for u in desired.users.values()} | set(anchors)
    return ({identity_state.user_identity(i) for i in users}
            | {identity_state.group_identity(g) for g in groups})


def take_identities(store: AuditStore, run_id: str, identities: Iterable[str]) -> dict[str, str]:
    """Register the run's intent on its identities, then wait for older runs' writes in flight
    on them. Returns identity -> run for those a run with newer IDCS data holds."""
    wanted = set(identities)
    started = time.monotonic()
    lost = identity_state.register_intent(store, run_id, data_as_of(store, run_id), wanted)
    identity_state.wait_for_writes(store, run_id)
    log.info("convergence: %d identities taken for this run, %d held by runs with newer IDCS "
             "data%s (%.2fs)", len(wanted) - len(lost), len(lost),
             f" ({', '.join(sorted(set(lost.values()))[:3])})" if lost else "",
             time.monotonic() - started)
    return lost


def release_identities(store: AuditStore, run_id: str) -> int:
    """A run that will never write (stopped before planning, or its plan was blocked) gives up
    the identities it took; returns how many."""
    released = identity_state.forget_intents(store, run_id)
    if released:
        log.info("convergence: %d identities released (this run writes nothing)", released)
    return released


def hand_over(store: AuditStore, run_id: str, ops: list[Operation]) -> int:
    """After the plan is recorded: take the identities its operations touch (compare-and-set);
    an operation whose every identity a run with newer IDCS data holds is ``superseded`` now,
    with that run named. Additions that lose only some users are trimmed when sent."""
    lost = identity_state.register_intent(store, run_id, data_as_of(store, run_id),
                                          {i for op in ops for i in op.identities})
    gone = [op for op in ops if op.identities and all(i in lost for i in op.identities)]
    started = time.monotonic()
    for op in gone:
        runs = ", ".join(sorted({lost[i] for i in op.identities}))
        store.record_attempt(run_id, op.op_id, outcome="superseded", http_status=None,
                             error=f"superseded at planning: {runs} planned for this identity "
                                   "from newer IDCS data", started=started)
    if gone:
        log.warning("%d operations left to runs that planned from newer IDCS data", len(gone))
    return len(gone)
