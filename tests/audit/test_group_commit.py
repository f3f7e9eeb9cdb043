"""Group commit: many threads' marks and attempts share transactions, none is lost or merged
into another's number, and a failed transaction fails every writer in it."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from identity_sync.audit.group_commit import GroupCommit
from identity_sync.audit.store import Attempt, AuditStore

from .workers import RUN, plan_ops

THREADS, OPS_PER_THREAD = 8, 25


def test_threads_share_transactions_and_every_record_lands(audit_url: str) -> None:
    store = AuditStore(audit_url)
    plan = plan_ops(THREADS * OPS_PER_THREAD)
    store.record_plan(RUN, plan)
    writer = GroupCommit(store, RUN)
    gate, numbers = threading.Barrier(THREADS), Counter[int]()

    def lane(index: int) -> None:
        gate.wait()
        for op in plan[index::THREADS]:
            writer.mark(op.op_id, "started")
            numbers[writer.record_attempt(op.op_id, outcome="failed", http_status=503,
                                          error="busy", started=time.monotonic())] += 1
            numbers[writer.record_attempt(op.op_id, outcome="done", http_status=201,
                                          error=None, started=time.monotonic(),
                                          anchors={op.idcs_id: op.target})] += 1

    pool = [threading.Thread(target=lane, args=(i,)) for i in range(THREADS)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    ops = len(plan)
    assert numbers == {1: ops, 2: ops}  # each caller got its own operation's number
    assert writer.records == 3 * ops
    assert writer.transactions < writer.records  # contended writers did share
    attempts = store.attempts(RUN)
    assert Counter((a["attempt"], a["outcome"]) for a in attempts) == {
        (1, "failed"): ops, (2, "done"): ops}
    assert {op["status"] for op in store.plan(RUN)} == {"done"}
    assert store.anchors() == {op.idcs_id: op.target for op in plan}
    store.dispose()


def test_one_transaction_numbers_repeats_of_an_operation_in_order(audit_url: str) -> None:
    store = AuditStore(audit_url)
    a, b = plan_ops(2)
    store.record_plan(RUN, [a, b])
    store.record_attempt(RUN, a.op_id, outcome="failed", http_status=500, error="x",
                         started=time.monotonic())
    numbers = store.write_progress(RUN, attempts=[
        Attempt(a.op_id, "interrupted", None, "lost", 0), Attempt(b.op_id, "failed", 503, "y", 0),
        Attempt(a.op_id, "done", 201, None, 0)], marks=[(b.op_id, "started")]).numbers
    assert numbers == [2, 1, 3]
    assert {op["op_id"]: op["status"] for op in store.plan(RUN)} == {
        a.op_id: "done", b.op_id: "started"}
    store.dispose()


def test_a_failed_transaction_fails_every_writer_in_it(tmp_path, monkeypatch) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    plan = plan_ops(4)
    store.record_plan(RUN, plan)
    writer = GroupCommit(store, RUN)
    entered, release = threading.Event(), threading.Event()
    real = store.write_progress

    def slow_then_broken(run_id: str, **kwargs):  # the first write holds the door open
        if not entered.is_set():
            entered.set()
            release.wait(5)
            return real(run_id, **kwargs)
        raise RuntimeError("audit database gone")

    monkeypatch.setattr(store, "write_progress", slow_then_broken)
    errors: list[str] = []

    def write(op_id: str) -> None:
        try:
            writer.mark(op_id, "started")
        except RuntimeError as exc:
            errors.append(str(exc))

    first = threading.Thread(target=write, args=(plan[0].op_id,))
    first.start()
    entered.wait(5)
    queued = [threading.Thread(target=write, args=(op.op_id,)) for op in plan[1:]]
    for th in queued:
        th.start()
    deadline = time.monotonic() + 5
    while len(writer._queue) < len(queued) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for th in [first, *queued]:
        th.join(10)
    assert errors == ["audit database gone"] * len(queued)  # the queued group failed together
    statuses = {op["op_id"]: op["status"] for op in store.plan(RUN)}
    assert statuses[plan[0].op_id] == "started"
    assert all(statuses[op.op_id] == "planned" for op in plan[1:])
    with pytest.raises(RuntimeError):
        writer.mark(plan[1].op_id, "started")
    store.dispose()
