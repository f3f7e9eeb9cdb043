"""Per-identity convergence state on SQLite and PostgreSQL: compare-and-set by IDCS data age,
claims taken with the started mark, releases, and waiting for older writes in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from identity_sync.audit import identity_state as ids
from identity_sync.audit.group_commit import GroupCommit
from identity_sync.audit.store import AuditStore
from identity_sync.planning.operations import Operation, OpKind

from .conftest import T0

OLD, NEW = T0, T0 + timedelta(minutes=5)


@pytest.fixture
def store(audit_url: str) -> Iterator[AuditStore]:
    store = AuditStore(audit_url)
    yield store
    store.dispose()


def test_newer_data_wins_whatever_order_runs_register_in(store: AuditStore) -> None:
    assert ids.register_intent(store, "old", OLD, ["user:a", "user:b"]) == {}
    assert ids.register_intent(store, "new", NEW, ["user:b", "user:c"]) == {}
    # The older run cannot take b back, and re-registering its own a keeps it.
    assert ids.register_intent(store, "old", OLD, ["user:a", "user:b"]) == {"user:b": "new"}
    assert ids.holders(store, "old", ["user:a", "user:b", "user:c"]) == {
        "user:b": "new", "user:c": "new"}
    # Thousands at once (chunked statements), on both databases.
    many = [f"user:{n}" for n in range(2500)]
    assert ids.register_intent(store, "full", NEW + timedelta(minutes=1), many) == {}
    assert ids.register_intent(store, "late-old", OLD, many[:1200]) == {
        i: "full" for i in many[:1200]}


def test_claims_hold_only_while_the_intent_is_the_runs(store: AuditStore) -> None:
    ids.register_intent(store, "old", OLD, ["user:a", "user:b"])
    op_a = Operation(OpKind.CREATE_USER, "a", {"name": "a"}, "x", identities=["user:a"])
    op_b = Operation(OpKind.CREATE_USER, "b", {"name": "b"}, "x", identities=["user:b"])
    store.record_plan("old", [op_a, op_b])
    writer = GroupCommit(store, "old")
    assert writer.mark(op_a.op_id, "started", claim=["user:a"]) == set()
    ids.register_intent(store, "new", NEW, ["user:a", "user:b"])  # a newer run takes both
    assert ids.in_flight_elsewhere(store, "new") == 1  # a's write is still in flight
    assert writer.mark(op_b.op_id, "started", claim=["user:b"]) == {"user:b"}
    writer.record_attempt(op_a.op_id, outcome="done", http_status=None, error=None,
                          started=time.monotonic(), release=("user:a",))
    assert ids.in_flight_elsewhere(store, "new") == 0
    # Never registered (a plan from before this release): not taken from anyone.
    assert writer.mark(op_b.op_id, "started", claim=["user:zz"]) == set()


def test_a_newer_run_waits_for_an_older_write_in_flight(store: AuditStore) -> None:
    ids.register_intent(store, "old", OLD, ["user:a"])
    op = Operation(OpKind.CREATE_USER, "a", {"name": "a"}, "x", identities=["user:a"])
    store.record_plan("old", [op])
    writer = GroupCommit(store, "old")
    writer.mark(op.op_id, "started", claim=["user:a"])
    ids.register_intent(store, "new", NEW, ["user:a"])

    def land() -> None:
        time.sleep(0.5)
        writer.record_attempt(op.op_id, outcome="done", http_status=None, error=None,
                              started=time.monotonic(), release=("user:a",))

    thread = threading.Thread(target=land)
    thread.start()
    waited = ids.wait_for_writes(store, "new", timeout=10, poll=0.02)
    thread.join()
    assert 0.3 < waited < 5
    assert ids.in_flight_elsewhere(store, "new") == 0


def test_a_dead_workers_claim_is_not_waited_on(store: AuditStore, monkeypatch) -> None:
    ids.register_intent(store, "old", OLD, ["user:a"])
    op = Operation(OpKind.CREATE_USER, "a", {"name": "a"}, "x", identities=["user:a"])
    store.record_plan("old", [op])
    GroupCommit(store, "old").mark(op.op_id, "started", claim=["user:a"])
    ids.register_intent(store, "new", NEW, ["user:a"])
    later = ids.utcnow() + ids.STALE_IN_FLIGHT + timedelta(seconds=1)
    monkeypatch.setattr(ids, "utcnow", lambda: later)
    assert ids.wait_for_writes(store, "new", timeout=5) < 1


def test_a_run_that_never_planned_gives_its_identities_back(store: AuditStore) -> None:
    """A newer run took alice before reading Bitbucket, then failed before planning: the older
    run that did plan for her may write her again."""
    ids.register_intent(store, "old", OLD, ["user:alice"])
    op = Operation(OpKind.CREATE_USER, "alice", {"name": "alice"}, "x",
                   identities=["user:alice"])
    store.record_plan("old", [op])
    ids.register_intent(store, "new", NEW, ["user:alice"])
    assert GroupCommit(store, "old").mark(op.op_id, "started", claim=["user:alice"]) == {
        "user:alice"}
    assert ids.forget_intents(store, "new") == 1
    assert GroupCommit(store, "old").mark(op.op_id, "started", claim=["user:alice"]) == set()
