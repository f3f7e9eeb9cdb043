"""Per-identity convergence (design invariant 3): which run may still write to a user or group.

Runs overlap: a scheduled run, on-login runs for everybody arriving at 9:00, a cleared old run.
Each identity (``user:<IDCS id>``, ``group:<key>``) converges on its own, decided by the age of
the IDCS data a run planned from (``sync_runs.data_as_of``, when its extract began):

- **Intent** (compare-and-set): a run registers the identities it syncs, before it reads
  Bitbucket and again for every identity its plan touches. It takes an identity only when no run
  with newer IDCS data holds it; identities it cannot take are left to that run.
- **Claim**: an operation is sent only after it claims its identities in the same transaction
  that marks it ``started``; the claim holds only while the identity's intent is still its
  run's, so an older plan never writes after a newer one was registered.
- **In flight**: a run that has just taken identities waits, before reading Bitbucket, until no
  older run has a write in flight on them. From then on its view of those identities is final:
  nobody else may write them.

Runs for different identities never interact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from . import schema as t

if TYPE_CHECKING:  # the store writes claims through this module: no import cycle at run time
    from .store import AuditStore

log = logging.getLogger(__name__)

CHUNK = 500  # identities per statement: bounded IN lists on both databases
STALE_IN_FLIGHT = timedelta(minutes=5)  # a claim older than this is a dead worker's, not waited on


def utcnow() -> datetime:
    return datetime.now(UTC)


def user_identity(idcs_id: str) -> str:
    return f"user:{idcs_id}"


def unanchored_identity(name: str) -> str:
    """A Bitbucket user the audit store knows no IDCS id for (e.g. a stray member of a managed
    group): keyed by the casefolded name."""
    return f"user~{name.casefold()}"


def group_identity(name: str) -> str:
    return f"group:{name.casefold()}"


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def register_intent(store: AuditStore, run_id: str, data_as_of: datetime,
                    identities: Iterable[str]) -> dict[str, str]:
    """Take the identities for ``run_id`` unless a run with newer IDCS data holds them.

    Returns identity -> run id for those another run holds because its data is newer (on a
    tie the later registration wins)."""
    wanted = sorted(set(identities))
    if not wanted:
        return {}
    s = t.identity_state
    now = utcnow()
    insert = (postgresql.insert if store.engine.dialect.name == "postgresql"
              else sqlite.insert)(s)
    stmt = insert.on_conflict_do_update(
        index_elements=["identity"],
        set_={"intent_run": insert.excluded.intent_run,
              "intent_data_as_of": insert.excluded.intent_data_as_of,
              "intent_at": insert.excluded.intent_at},
        where=or_(s.c.intent_run == insert.excluded.intent_run,
                  s.c.intent_data_as_of <= insert.excluded.intent_data_as_of))
    lost: dict[str, str] = {}
    with store._begin() as conn:
        for chunk in _chunks(wanted):
            conn.execute(stmt, [{"identity": i, "intent_run": run_id, "intent_data_as_of":
                                 data_as_of, "intent_at": now} for i in chunk])
            lost.update(conn.execute(select(s.c.identity, s.c.intent_run).where(
                s.c.identity.in_(chunk), s.c.intent_run != run_id)).tuples().all())
    return lost


def forget_intents(store: AuditStore, run_id: str) -> int:
    """Drop the intents ``run_id`` holds (with no write of its own in flight): the identities
    are nobody's again, so any run that planned for them may write them."""
    s = t.identity_state.c
    with store._begin() as conn:
        return conn.execute(delete(t.identity_state).where(
            s.intent_run == run_id, s.inflight_run.is_(None))).rowcount


def holders(store: AuditStore, run_id: str, identities: Iterable[str]) -> dict[str, str]:
    """identity -> the run that holds it, for those of ``identities`` not held by ``run_id``."""
    wanted = sorted(set(identities))
    s = t.identity_state.c
    out: dict[str, str] = {}
    with store.engine.connect() as conn:
        for chunk in _chunks(wanted):
            out.update(conn.execute(select(s.identity, s.intent_run).where(
                s.identity.in_(chunk), s.intent_run != run_id)).tuples().all())
    return out


def claim(conn: Connection, run_id: str, identities: Iterable[str], now: datetime) -> set[str]:
    """Inside the transaction that marks operations ``started``: mark the identities whose
    intent is still ``run_id``'s as in flight for it; returns those it could not claim (held by
    another run). An identity with no row was never registered (a plan recorded before this
    release): nobody else planned for it either, so it is not taken from anyone."""
    s = t.identity_state.c
    lost: set[str] = set()
    for chunk in _chunks(sorted(set(identities))):
        conn.execute(update(t.identity_state).where(
            s.identity.in_(chunk), s.intent_run == run_id,
        ).values(inflight_run=run_id, inflight_since=now))
        lost.update(conn.execute(select(s.identity).where(
            s.identity.in_(chunk), s.intent_run != run_id)).scalars())
    return lost


def release(conn: Connection, run_id: str, identities: list[str], now: datetime, *,
            landed: bool) -> None:
    """The operation's outcome is recorded: its identities are no longer in flight for
    ``run_id``; ``landed`` also records the write as the identity's last applied one."""
    s = t.identity_state.c
    values: dict[str, object] = {"inflight_run": None, "inflight_since": None}
    if landed:
        values.update(applied_run=run_id, applied_at=now)
    conn.execute(update(t.identity_state).where(
        s.identity.in_(identities), s.inflight_run == run_id).values(**values))


def in_flight_elsewhere(store: AuditStore, run_id: str) -> int:
    """Identities ``run_id`` holds on which another run has a live write in flight."""
    s = t.identity_state.c
    fresh = utcnow() - STALE_IN_FLIGHT
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(and_(
            s.intent_run == run_id, s.inflight_run.is_not(None), s.inflight_run != run_id,
            s.inflight_since > fresh))).scalar() or 0)


def wait_for_writes(store: AuditStore, run_id: str, *, timeout: float = 300.0,
                    poll: float = 0.1) -> float:
    """Wait until no older run has a write in flight on the identities ``run_id`` holds, so
    what it reads from Bitbucket next is final for them; returns the seconds waited. A claim
    older than :data:`STALE_IN_FLIGHT` is a dead worker's and is not waited on."""
    started = time.monotonic()
    while (busy := in_flight_elsewhere(store, run_id)) and time.monotonic() - started < timeout:
        time.sleep(poll)
    waited = time.monotonic() - started
    if busy:
        log.warning("%d identities still have another run's write in flight after %.0fs; "
                    "reading Bitbucket anyway", busy, waited)
    elif waited > 1:
        log.info("waited %.1fs for older runs' writes on this run's identities", waited)
    return waited
