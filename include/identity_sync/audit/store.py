"""The audit store: one SQLAlchemy engine on SQLite (default) or PostgreSQL.

Never Airflow's metadata database: the DAG reaches this store through its own connection
(``sync_audit_db``). Opening a store upgrades its database to the newest schema revision first
(:mod:`.migrate`); every write runs in one transaction that is safe against concurrent mapped
tasks (upserts on natural keys, SQLite transactions that take the write lock up front).
"""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..planning.operations import Operation
from . import identity_state
from . import schema as t
from .migrate import WRITE, upgrade

ATTEMPT_RETRIES = 10  # concurrent writers of the same operation's attempt number: retry
# Tables whose rows belong to one run (everything but the anchors), pruned with their run.
RUN_TABLES = (t.operation_attempts, t.plan_operations, t.run_artifacts, t.dq_results,
              t.quarantine, t.idcs_extract_endpoints, t.idcs_user_ids, t.idcs_extracts)
METRIC_COLUMNS = ("requests", "pages", "bytes", "retries", "throttled", "errors", "seconds")


@dataclass(frozen=True)
class Attempt:
    """One try of one operation, as :meth:`AuditStore.write_progress` records it."""

    op_id: str
    outcome: str
    http_status: int | None
    error: str | None
    duration_ms: int
    anchors: dict[str, str | None] | None = None
    release: tuple[str, ...] = ()  # identities this attempt ends the in-flight claim on

    @classmethod
    def timed(cls, op_id: str, *, outcome: str, http_status: int | None, error: str | None,
              started: float, anchors: dict[str, str | None] | None = None,
              release: tuple[str, ...] = ()) -> Attempt:
        """The attempt that began at ``started`` (``time.monotonic()``) and ends now."""
        return cls(op_id, outcome, http_status, error,
                   int((time.monotonic() - started) * 1000), anchors, release)


@dataclass(frozen=True)
class Progress:
    """What :meth:`AuditStore.write_progress` wrote: attempt numbers in the order given, and
    per claiming operation the identities it could not claim (a newer run holds them)."""

    numbers: list[int]
    lost: dict[str, set[str]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class AuditStore:
    """Runs, snapshots, plans, attempts, anchors, data quality and quarantine, keyed so that
    retries upsert. ``migrate=False`` skips the automatic upgrade (tests of old revisions)."""

    def __init__(self, url: str, *, echo: bool = False, migrate: bool = True) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        # SQLite has one writer at a time, and a writer kept waiting sleeps in its busy handler
        # in steps of up to 100 ms, long after the lock (held ~1 ms) came free: the apply's
        # threads spent most of their time there. Queue this process's writers on a lock that
        # wakes the next one at once; other processes still wait on the busy timeout.
        self._writers: AbstractContextManager[Any] = nullcontext()
        if url.startswith("sqlite"):
            self._writers = threading.RLock()
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        if migrate:
            upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it holds the write lock from its first statement, so a
        read-then-write cannot be overtaken by another writer)."""
        with self._writers, self.engine.connect().execution_options(**WRITE) as conn, \
                conn.begin():
            yield conn

    # -- generic upsert --------------------------------------------------------------------------
    def _upsert(self, table: Table, rows: list[dict[str, Any]], *, update_cols: Iterable[str]
                | None = None) -> None:
        if not rows:
            return
        keys = {c.name for c in table.primary_key.columns}
        cols = list(update_cols) if update_cols is not None else [
            c for c in rows[0] if c not in keys]
        stmt = self._upsert_stmt(table, cols)
        with self._begin() as conn:
            for start in range(0, len(rows), 5000):
                conn.execute(stmt, rows[start : start + 5000])

    def _upsert_stmt(self, table: Table, update_cols: list[str]) -> Any:
        """The dialect's insert-or-update (insert-or-ignore without ``update_cols``) on
        ``table``'s primary key, executed with a list of rows: one compiled form, cached."""
        keys = [c.name for c in table.primary_key.columns]
        dialect = self.engine.dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        if not update_cols:
            return insert.on_conflict_do_nothing(index_elements=keys)
        return insert.on_conflict_do_update(
            index_elements=keys, set_={c: insert.excluded[c] for c in update_cols})

    # -- runs ------------------------------------------------------------------------------------
    def start_run(self, run_id: str, *, dag_id: str, trigger: str, mode: str, dry_run: bool,
                  rules_hash: str, rules_version: str | None = None) -> None:
        """Create the run row (``run_id`` is the Airflow run id); a retried start keeps the
        original start time."""
        self._upsert(t.sync_runs, [{
            "run_id": run_id, "dag_id": dag_id, "trigger": trigger, "mode": mode,
            "dry_run": dry_run, "status": "running", "rules_hash": rules_hash,
            "rules_version": rules_version, "started_at": utcnow(), "counts": {},
            "message": None, "ended_at": None,
        }], update_cols=["status", "rules_hash", "rules_version", "dry_run", "mode", "message",
                         "ended_at"])

    def update_run(self, run_id: str, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(update(t.sync_runs).where(t.sync_runs.c.run_id == run_id).values(**values))

    def merge_run_counts(self, run_id: str, sections: Mapping[str, Any], **columns: Any
                         ) -> dict[str, Any] | None:
        """Replace the ``sections`` (top-level keys) of the run's ``counts`` and set the run's
        ``columns``, reading and writing in one write transaction (the run row locked on
        PostgreSQL, the write lock held on SQLite): concurrent callers lose no section. Returns
        the merged counts, or None when there is no such run."""
        c = t.sync_runs.c
        with self._begin() as conn:
            row = conn.execute(select(c.counts).where(c.run_id == run_id)
                               .with_for_update()).first()
            if row is None:
                return None
            counts = {**(row.counts or {}), **sections}
            conn.execute(update(t.sync_runs).where(c.run_id == run_id)
                         .values(counts=counts, **columns))
        return counts

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.sync_runs).where(t.sync_runs.c.run_id == run_id)).first()
        return dict(row._mapping) if row else None

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.sync_runs).order_by(t.sync_runs.c.started_at.desc())
                                .limit(limit))
            return [dict(r._mapping) for r in rows]

    # -- artifacts (snapshots, desired state, Bitbucket state) -------------------------------------
    def put_artifact(self, run_id: str, name: str, data: Any, rows: int) -> None:
        payload = gzip.compress(json.dumps(data, separators=(",", ":")).encode(), compresslevel=5)
        self._upsert(t.run_artifacts, [{"run_id": run_id, "name": name, "rows": rows,
                                        "payload": payload, "created_at": utcnow()}])

    def get_artifact(self, run_id: str, name: str) -> Any:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.run_artifacts.c.payload).where(
                t.run_artifacts.c.run_id == run_id, t.run_artifacts.c.name == name)).first()
        if row is None:
            raise KeyError(f"run {run_id} has no {name!r} artifact: did its upstream task run?")
        return json.loads(gzip.decompress(row[0]))

    # -- plan and results --------------------------------------------------------------------------
    def record_plan(self, run_id: str, ops: list[Operation]) -> None:
        now = utcnow()
        self._upsert(t.plan_operations, [{
            "run_id": run_id, "op_id": op.op_id, "seq": seq, "phase": str(op.phase),
            "batch": op.batch, "kind": str(op.kind), "target": op.target, "idcs_id": op.idcs_id,
            "params": op.params, "before": op.before, "after": op.after, "reason": op.reason,
            "status": "planned", "updated_at": now, "planned_at": now, "lane": op.lane or None,
            "identities": op.identities or None,
        } for seq, op in enumerate(ops)],
            # A re-plan of the same run renumbers its batches but never resets progress.
            update_cols=["seq", "phase", "batch", "lane", "identities"])

    def batch_operations(self, run_id: str, phase: str, batch: int) -> list[tuple[Operation, str]]:
        c = t.plan_operations.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.plan_operations).where(
                c.run_id == run_id, c.phase == phase, c.batch == batch).order_by(c.seq)).all()
        return [(_op_from_row(r._mapping), r.status) for r in rows]

    def plan(self, run_id: str) -> list[dict[str, Any]]:
        c = t.plan_operations.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.plan_operations).where(c.run_id == run_id)
                                .order_by(c.seq)).all()
        return [dict(r._mapping) for r in rows]

    def record_attempt(self, run_id: str, op_id: str, *, outcome: str, http_status: int | None,
                       error: str | None, started: float,
                       anchors: dict[str, str | None] | None = None) -> int:
        """Append attempt N+1 for the operation and set the operation's status; returns N+1.

        ``anchors`` (IDCS id -> Bitbucket name, None to drop) are saved in the same transaction:
        an operation's outcome and the identity it implies are committed together."""
        attempt = Attempt.timed(op_id, outcome=outcome, http_status=http_status, error=error,
                                started=started, anchors=anchors)
        return self.write_progress(run_id, attempts=[attempt]).numbers[0]

    def write_progress(self, run_id: str, *, attempts: Sequence[Attempt] = (),
                       marks: Sequence[tuple[str, str]] = (),
                       claims: Sequence[tuple[str, Sequence[str]]] = ()) -> Progress:
        """In one transaction: append the ``attempts`` (numbered after each operation's last)
        with their statuses and anchors, ending their identities' in-flight claims; set the
        ``marks`` (op_id, status); and claim each ``claims`` (op_id, identities) for this run
        (:func:`.identity_state.claim`). The apply's threads share such transactions
        (:mod:`.group_commit`).

        Two writers racing for the same number (a task and its zombie, say) cannot both win the
        primary key: the loser's transaction rolls back and it takes the next number."""
        c, p = t.operation_attempts.c, t.plan_operations.c
        op_ids = sorted({a.op_id for a in attempts})
        for tries in range(ATTEMPT_RETRIES):
            try:
                with self._begin() as conn:
                    now = utcnow()
                    last: dict[str, int] = {}
                    if op_ids:
                        # PostgreSQL: queue writers of the same operations on their plan rows,
                        # locked in one order (SQLite's BEGIN IMMEDIATE already serialises).
                        conn.execute(select(p.op_id).where(p.run_id == run_id, p.op_id.in_(
                            op_ids)).order_by(p.op_id).with_for_update())
                        last = dict(conn.execute(select(c.op_id, func.max(c.attempt)).where(
                            c.run_id == run_id, c.op_id.in_(op_ids)).group_by(c.op_id)).all())
                    numbers, rows, anchors = [], [], {}
                    for a in attempts:
                        last[a.op_id] = number = (last.get(a.op_id) or 0) + 1
                        numbers.append(number)
                        rows.append({"run_id": run_id, "op_id": a.op_id, "attempt": number,
                                     "outcome": a.outcome, "http_status": a.http_status,
                                     "error": a.error, "duration_ms": a.duration_ms, "at": now})
                        anchors.update(a.anchors or {})
                    if rows:
                        conn.execute(t.operation_attempts.insert(), rows)
                    status: dict[str, str] = {a.op_id: a.outcome for a in attempts}
                    status.update(dict(marks))
                    for value in sorted(set(status.values())):
                        conn.execute(update(t.plan_operations).where(
                            p.run_id == run_id,
                            p.op_id.in_([o for o, v in status.items() if v == value]),
                        ).values(status=value, updated_at=now))
                    if anchors:
                        self._write_anchors(conn, run_id, anchors, now)
                    for landed in (True, False):
                        ended = sorted({i for a in attempts if (a.outcome == "done") is landed
                                        for i in a.release})
                        if ended:
                            identity_state.release(conn, run_id, ended, now, landed=landed)
                    taken = identity_state.claim(conn, run_id,
                                                 [i for _, ids in claims for i in ids], now)
                    lost = {op_id: {i for i in ids if i in taken} for op_id, ids in claims}
                return Progress(numbers, lost)
            except IntegrityError:  # no plan row to lock, and another writer took the number
                if tries == ATTEMPT_RETRIES - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * (tries + 1)))
        raise AssertionError("unreachable")

    def mark_operations(self, run_id: str, op_ids: list[str], status: str) -> None:
        with self._begin() as conn:
            conn.execute(update(t.plan_operations).where(
                t.plan_operations.c.run_id == run_id, t.plan_operations.c.op_id.in_(op_ids),
            ).values(status=status, updated_at=utcnow()))

    def operation_status_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        c = t.plan_operations.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.kind, c.status, func.count()).where(c.run_id == run_id)
                                .group_by(c.kind, c.status)).all()
        out: dict[str, dict[str, int]] = {}
        for kind, status, n in rows:
            out.setdefault(kind, {})[status] = n
        return out

    def failing_with(self, run_id: str, error_prefix: str) -> dict[str, str]:
        """op_id -> error, for the run's operations whose latest attempt failed with an error
        starting ``error_prefix``. Asked per apply batch, so the database does the scan."""
        c = t.operation_attempts.c
        with self.engine.connect() as conn:
            found = conn.execute(select(c.op_id, c.attempt, c.error).where(
                c.run_id == run_id, c.outcome == "failed",
                c.error.startswith(error_prefix, autoescape=True))).all()
            if not found:
                return {}
            latest = dict(conn.execute(select(c.op_id, func.max(c.attempt)).where(
                c.run_id == run_id, c.op_id.in_({r.op_id for r in found}))
                .group_by(c.op_id)).all())
        return {r.op_id: r.error for r in found if latest.get(r.op_id) == r.attempt}

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        c = t.operation_attempts.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.operation_attempts).where(c.run_id == run_id)
                                .order_by(c.op_id, c.attempt)).all()
        return [dict(r._mapping) for r in rows]

    # -- anchors -----------------------------------------------------------------------------------
    def anchors(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.identity_anchors.c.idcs_id,
                                       t.identity_anchors.c.bitbucket_name)).all()
        return {r[0]: r[1] for r in rows}

    def save_anchors(self, run_id: str, anchors: dict[str, str]) -> None:
        with self._begin() as conn:
            self._write_anchors(conn, run_id, anchors, utcnow())

    def _write_anchors(self, conn: Connection, run_id: str, anchors: Mapping[str, str | None],
                       now: datetime) -> None:
        keep = [{"idcs_id": i, "bitbucket_name": n, "first_run_id": run_id,
                 "last_run_id": run_id, "updated_at": now} for i, n in anchors.items() if n]
        drop = [i for i, n in anchors.items() if not n]
        if keep:
            conn.execute(self._upsert_stmt(
                t.identity_anchors, ["bitbucket_name", "last_run_id", "updated_at"]), keep)
        if drop:
            conn.execute(t.identity_anchors.delete().where(
                t.identity_anchors.c.idcs_id.in_(drop)))

    def drop_anchors(self, idcs_ids: Iterable[str]) -> None:
        ids = list(idcs_ids)
        if ids:
            with self._begin() as conn:
                conn.execute(t.identity_anchors.delete().where(
                    t.identity_anchors.c.idcs_id.in_(ids)))

    # -- data quality ------------------------------------------------------------------------------
    def record_dq(self, run_id: str, results: list[dict[str, Any]]) -> None:
        self._upsert(t.dq_results, [{"run_id": run_id, **r} for r in results])

    def record_quarantine(self, run_id: str, records: list[dict[str, Any]]) -> None:
        self._upsert(t.quarantine, [{"run_id": run_id, **r} for r in records])

    def quarantined(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.quarantine).where(t.quarantine.c.run_id == run_id)).all()
        return [dict(r._mapping) for r in rows]

    def dq(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.dq_results).where(t.dq_results.c.run_id == run_id)).all()
        return [dict(r._mapping) for r in rows]


    # -- IDCS extracts ------------------------------------------------------------------------------
    def record_extract(self, run_id: str, summary: dict[str, Any],
                       endpoints: dict[str, dict[str, Any]]) -> None:
        """One run's extract: totals (``summary`` holds every ``idcs_extracts`` column but the
        run id and time) and per-endpoint metrics. A retried extract replaces both."""
        row = {"run_id": run_id, "created_at": utcnow(),
               **{c.name: summary.get(c.name) for c in t.idcs_extracts.columns
                  if c.name not in ("run_id", "created_at")}}
        with self._begin() as conn:
            conn.execute(delete(t.idcs_extract_endpoints).where(
                t.idcs_extract_endpoints.c.run_id == run_id))
            conn.execute(delete(t.idcs_extracts).where(t.idcs_extracts.c.run_id == run_id))
            conn.execute(t.idcs_extracts.insert().values(**row))
            if endpoints:
                conn.execute(t.idcs_extract_endpoints.insert(), [
                    {"run_id": run_id, "endpoint": name,
                     **{c: stats.get(c, 0) for c in METRIC_COLUMNS}}
                    for name, stats in endpoints.items()])

    def extract_record(self, run_id: str) -> dict[str, Any] | None:
        """The run's extract totals with ``endpoints`` (per-endpoint metrics), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.idcs_extracts).where(
                t.idcs_extracts.c.run_id == run_id)).first()
            if row is None:
                return None
            e = t.idcs_extract_endpoints.c
            rows = conn.execute(select(t.idcs_extract_endpoints).where(e.run_id == run_id)
                                .order_by(e.endpoint)).all()
        endpoints = {r.endpoint: {c: getattr(r, c) for c in METRIC_COLUMNS} for r in rows}
        return {**dict(row._mapping), "endpoints": endpoints}

    def extract_history(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest extracts' totals, newest first (how the cost of a run evolves)."""
        c = t.idcs_extracts.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.idcs_extracts).order_by(c.created_at.desc())
                                .limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    def record_user_ids(self, run_id: str, present: Iterable[str],
                        deleted: Iterable[str] = ()) -> None:
        """The IDCS user ids a run saw (``present``) and found gone (``deleted``); a retried
        extract replaces its earlier rows."""
        rows = {i: "present" for i in present}
        rows.update({i: "deleted" for i in deleted})
        with self._begin() as conn:
            conn.execute(delete(t.idcs_user_ids).where(t.idcs_user_ids.c.run_id == run_id))
            items = list(rows.items())
            for start in range(0, len(items), 5000):
                conn.execute(t.idcs_user_ids.insert(), [
                    {"run_id": run_id, "idcs_id": i, "state": state}
                    for i, state in items[start : start + 5000]])

    def known_user_ids(self, listing: str, exclude_run: str | None = None
                       ) -> tuple[str, set[str]] | None:
        """The user ids IDCS should hold now as far as the audit store knows: those the last
        full extract of ``listing`` saw, plus ids later runs saw, minus ids later runs found
        gone. Returns (that full run's id, the ids), or None without a full extract."""
        x, u = t.idcs_extracts.c, t.idcs_user_ids.c
        with self.engine.connect() as conn:
            base = conn.execute(select(x.run_id, x.created_at).where(
                x.mode == "full", x.listing == listing, x.run_id != (exclude_run or ""))
                .order_by(x.created_at.desc()).limit(1)).first()
            if base is None:
                return None
            later = select(x.run_id).where(x.created_at > base.created_at, x.listing == listing,
                                           x.run_id != (exclude_run or ""))
            ids = set(conn.execute(select(u.idcs_id).where(u.run_id == base.run_id,
                                                           u.state == "present")).scalars())
            changes = conn.execute(select(u.idcs_id, u.state).where(u.run_id.in_(later))).all()
        gone = {i for i, state in changes if state == "deleted"}
        ids.update(i for i, state in changes if state == "present")
        return base.run_id, ids - gone

    # -- retention ---------------------------------------------------------------------------------
    def prune(self, older_than_days: int = 365, *, now: datetime | None = None) -> dict[str, int]:
        """Delete runs that ended before the cutoff (and runs that never ended but started before
        it), with every row they own; identity anchors are kept, since they are what lets the
        next run recognise a renamed user. Returns rows deleted per table."""
        if older_than_days < 1:
            raise ValueError("older_than_days must be at least 1")
        cutoff = (now or utcnow()).astimezone(UTC) - timedelta(days=older_than_days)
        r = t.sync_runs.c
        old = select(r.run_id).where(or_(r.ended_at < cutoff,
                                          r.ended_at.is_(None) & (r.started_at < cutoff)))
        deleted = {table.name: 0 for table in (*RUN_TABLES, t.sync_runs)}
        with self.engine.connect() as conn:
            run_ids = list(conn.execute(old).scalars())
        for start in range(0, len(run_ids), 500):  # bounded transactions, bounded IN lists
            chunk = run_ids[start : start + 500]
            with self._begin() as conn:
                for table in (*RUN_TABLES, t.sync_runs):
                    result = conn.execute(delete(table).where(table.c.run_id.in_(chunk)))
                    deleted[table.name] += result.rowcount
        return deleted

    # -- owned groups (design invariant 4) ---------------------------------------------------------
    def record_owned_group(self, name: str, run_id: str) -> None:
        """``name`` was created by the sync in ``run_id``: from now on it is the sync's to manage.
        The first record of a group is kept (a re-creation does not move its origin)."""
        self._upsert(t.owned_groups, [{"group_key": name.casefold(), "name": name,
                                       "created_by_run": run_id, "created_at": utcnow()}],
                     update_cols=[])

    def owned_groups(self, candidates: Iterable[str] = ()) -> dict[str, str]:
        """Group key -> name of the Bitbucket groups the sync created.

        ``candidates`` (group names, e.g. the existing groups a plan is about to manage) not in
        the table yet are looked up in the audit trail: groups created before the table existed
        (or whose record a crash lost) count as owned when a ``create_group`` of theirs ended
        ``done`` without Bitbucket answering 409 (an old release took 409 for done: those groups
        existed already and are not the sync's). Found ones are recorded, once."""
        o, p, a = t.owned_groups.c, t.plan_operations.c, t.operation_attempts.c
        with self.engine.connect() as conn:
            owned = {r.group_key: r.name for r in conn.execute(select(o.group_key, o.name))}
        wanted = sorted({n for n in candidates if n.casefold() not in owned})
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), 500):  # the target index serves these lookups
            chunk = wanted[start : start + 500]
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(p.run_id, p.target, p.updated_at)
                    .join(t.operation_attempts, (a.run_id == p.run_id) & (a.op_id == p.op_id))
                    .where(p.target.in_(chunk), p.kind == "create_group", p.status == "done",
                           a.outcome == "done",
                           or_(a.http_status.is_(None), a.http_status != 409))
                    .order_by(p.updated_at)).all()
            for row in rows:
                found.setdefault(row.target.casefold(), {
                    "group_key": row.target.casefold(), "name": row.target,
                    "created_by_run": row.run_id, "created_at": row.updated_at})
        if found:
            self._upsert(t.owned_groups, list(found.values()), update_cols=[])
            owned.update({k: r["name"] for k, r in found.items()})
        return owned

    def conflicted_creates(self, run_id: str) -> list[str]:
        """Names whose ``create_user`` in this run ended ``conflict``: an existing account the
        sync cannot prove its own, which the run's later operations must leave alone."""
        p = t.plan_operations.c
        with self.engine.connect() as conn:
            return list(conn.execute(select(p.target).where(
                p.run_id == run_id, p.kind == "create_user", p.status == "conflict")).scalars())


def _op_from_row(row: Any) -> Operation:
    return Operation(kind=row["kind"], target=row["target"], params=row["params"],
                     reason=row["reason"], before=row["before"], after=row["after"],
                     idcs_id=row["idcs_id"], op_id=row["op_id"], batch=row["batch"],
                     lane=row["lane"] or "", identities=list(row["identities"] or []))


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    """WAL lets readers run beside the writer. ``synchronous=NORMAL`` (safe in WAL mode) syncs
    at checkpoints instead of at every commit: a commit can no longer be lost to a crashed
    *process* (the crash-recovery case), only to a power cut of the host, which may then undo
    the last commits, never corrupt the file; the apply commits once or twice per operation, and
    fsyncs made commits wait on the disk while other writers queued behind them. The driver's own
    implicit transactions are turned off (``isolation_level = None``) so :func:`_sqlite_begin`
    decides how each begins."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writes start with ``BEGIN IMMEDIATE``: SQLite then queues writers on its busy timeout
    instead of failing one whose read snapshot went stale; reads start a plain ``BEGIN``."""
    immediate = conn.get_execution_options().get("idsync_write")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
