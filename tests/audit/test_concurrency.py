"""Concurrent writers on SQLite and PostgreSQL: mapped tasks starting together on a fresh
database, threads racing for the same operation's attempt number."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter

from sqlalchemy import func, select

from identity_sync.audit import schema as t
from identity_sync.audit.migrate import schema_diff
from identity_sync.audit.store import AuditStore

from .workers import RUN, mapped_task, plan_ops

WORKERS, OPS = 6, 24


def count(store: AuditStore, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_mapped_tasks_starting_at_once_on_a_fresh_database(audit_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=mapped_task, args=(audit_url, i, WORKERS, OPS, barrier, errors))
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    assert [p.exitcode for p in procs] == [0] * WORKERS

    store = AuditStore(audit_url)
    assert schema_diff(store.engine) == []  # one migration, applied once
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.schema_version)).scalar() == 1
    assert len(store.runs()) == 1 and store.get_run(RUN)["status"] == "running"
    assert count(store, t.plan_operations) == OPS
    attempts = store.attempts(RUN)
    assert len(attempts) == 2 * OPS
    assert Counter((a["attempt"], a["outcome"]) for a in attempts) == {
        (1, "failed"): OPS, (2, "done"): OPS}
    assert {op["status"] for op in store.plan(RUN)} == {"done"}
    assert store.anchors() == {f"u{i}": f"user{i}" for i in range(OPS)}
    store.dispose()


def test_threads_racing_on_one_operation_get_distinct_attempt_numbers(audit_url: str) -> None:
    store = AuditStore(audit_url)
    [op] = plan_ops(1)
    store.record_plan(RUN, [op])
    threads, gate, numbers = 8, threading.Barrier(8), []

    def attempt() -> None:
        gate.wait()
        numbers.append(store.record_attempt(RUN, op.op_id, outcome="failed", http_status=503,
                                            error="busy", started=time.monotonic()))

    pool = [threading.Thread(target=attempt) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert sorted(numbers) == list(range(1, threads + 1))
    assert [a["attempt"] for a in store.attempts(RUN)] == list(range(1, threads + 1))
    store.dispose()


def test_attempts_without_a_plan_row_still_race_safely(audit_url: str) -> None:
    """No row to lock: the primary key decides and the loser retries with the next number."""
    store = AuditStore(audit_url)
    gate, numbers = threading.Barrier(6), []

    def attempt() -> None:
        gate.wait()
        numbers.append(store.record_attempt(RUN, "orphan", outcome="done", http_status=None,
                                            error=None, started=time.monotonic()))

    pool = [threading.Thread(target=attempt) for _ in range(6)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    store.dispose()
