"""Process entry points for the concurrency tests (importable, so ``spawn`` can start them)."""

from __future__ import annotations

import time
from typing import Any

from identity_sync.audit.store import AuditStore
from identity_sync.planning.operations import Operation, OpKind

RUN = "manual__2026-03-01T10:00:00+00:00"


def plan_ops(n: int) -> list[Operation]:
    return [Operation(OpKind.CREATE_USER, f"user{i}", {"name": f"user{i}"}, "new",
                      idcs_id=f"u{i}") for i in range(n)]


def mapped_task(url: str, index: int, workers: int, ops: int, barrier: Any, errors: Any) -> None:
    """What one mapped apply task does, all tasks released at once on a fresh database: open the
    store (migrating it), start the run, record the plan, attempt its share of the operations
    twice (fail, then succeed) and save their anchors."""
    try:
        barrier.wait(timeout=60)
        store = AuditStore(url)
        store.start_run(RUN, dag_id="d", trigger="manual", mode="full", dry_run=False,
                        rules_hash="h")
        plan = plan_ops(ops)
        store.record_plan(RUN, plan)
        for op in plan[index::workers]:
            store.record_attempt(RUN, op.op_id, outcome="failed", http_status=503,
                                 error="busy", started=time.monotonic())
            store.record_attempt(RUN, op.op_id, outcome="done", http_status=201, error=None,
                                 started=time.monotonic())
            store.save_anchors(RUN, {op.idcs_id or "": op.target})
        store.dispose()
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"worker {index}: {type(exc).__name__}: {exc}")
