"""The audit store on SQLite and PostgreSQL: upserts never duplicate, attempts are numbered."""

from __future__ import annotations

import time

from identity_sync.audit.store import AuditStore
from identity_sync.planning.operations import Operation, OpKind


def ops() -> list[Operation]:
    return [Operation(OpKind.CREATE_USER, "alice", {"name": "alice", "displayName": "A",
                                                    "email": "a@x.io"}, "new", idcs_id="u1"),
            Operation(OpKind.ADD_MEMBERS, "devs", {"group": "devs", "users": ["alice"]}, "member")]


def test_run_lifecycle_and_idempotent_start(audit_url: str) -> None:
    store = AuditStore(audit_url)
    store.start_run("r1", dag_id="d", trigger="manual", mode="full", dry_run=False,
                    rules_hash="abc")
    first = store.get_run("r1")
    store.start_run("r1", dag_id="d", trigger="manual", mode="full", dry_run=False,
                    rules_hash="abc")  # a retried task
    assert len(store.runs()) == 1
    assert store.get_run("r1")["started_at"] == first["started_at"]
    store.update_run("r1", status="succeeded", counts={"operations": 2})
    assert store.get_run("r1")["counts"] == {"operations": 2}
    store.dispose()


def test_plan_is_recorded_once_and_keeps_progress(audit_url: str) -> None:
    store = AuditStore(audit_url)
    plan = ops()
    store.record_plan("r1", plan)
    store.record_attempt("r1", plan[0].op_id, outcome="failed", http_status=503, error="busy",
                         started=time.monotonic())
    store.record_attempt("r1", plan[0].op_id, outcome="done", http_status=None, error=None,
                         started=time.monotonic())
    store.record_plan("r1", plan)  # re-plan after a retry must not reset the status
    rows = store.plan("r1")
    assert [(r["kind"], r["status"]) for r in rows] == [("create_user", "done"),
                                                        ("add_members", "planned")]
    attempts = store.attempts("r1")
    assert [(a["attempt"], a["outcome"], a["http_status"]) for a in attempts] == [
        (1, "failed", 503), (2, "done", None)]
    loaded = store.batch_operations("r1", "users", 0)
    assert loaded[0][0].params == plan[0].params and loaded[0][1] == "done"
    store.dispose()


def test_artifacts_round_trip_and_overwrite(audit_url: str) -> None:
    store = AuditStore(audit_url)
    store.put_artifact("r1", "snap", {"users": [{"id": "é"}]}, 1)
    store.put_artifact("r1", "snap", {"users": [{"id": "ü"}, {"id": "x"}]}, 2)
    assert store.get_artifact("r1", "snap") == {"users": [{"id": "ü"}, {"id": "x"}]}
    store.dispose()


def test_anchors_upsert_and_drop(audit_url: str) -> None:
    store = AuditStore(audit_url)
    store.save_anchors("r1", {"u1": "alice", "u2": "bob"})
    store.save_anchors("r2", {"u1": "alice.new"})
    assert store.anchors() == {"u1": "alice.new", "u2": "bob"}
    store.drop_anchors(["u2"])
    assert store.anchors() == {"u1": "alice.new"}
    store.dispose()


def test_dq_and_quarantine_upsert(audit_url: str) -> None:
    store = AuditStore(audit_url)
    row = {"suite": "s", "expectation": "e(id)", "severity": "record", "success": False,
           "unexpected_count": 1, "sample": ["x"]}
    store.record_dq("r1", [row])
    store.record_dq("r1", [{**row, "unexpected_count": 2}])
    assert [r["unexpected_count"] for r in store.dq("r1")] == [2]
    q = {"record_type": "user", "record_id": "u1", "reason": "bad email",
         "expectation": "e(email)", "value": "nope"}
    store.record_quarantine("r1", [q, q])
    assert len(store.quarantined("r1")) == 1
    store.dispose()


def test_an_attempt_and_the_identity_it_implies_commit_together(audit_url: str) -> None:
    store = AuditStore(audit_url)
    plan = ops()
    store.record_plan("r1", plan)
    store.save_anchors("r0", {"u9": "gone.user"})
    store.record_attempt("r1", plan[0].op_id, outcome="done", http_status=None, error=None,
                         started=time.monotonic(), anchors={"u1": "alice", "u9": None})
    assert store.anchors() == {"u1": "alice"}
    assert store.plan("r1")[0]["status"] == "done"
    # a later attempt (a rename, say) moves the anchor in the same transaction
    store.record_attempt("r1", plan[0].op_id, outcome="done", http_status=409, error="exists",
                         started=time.monotonic(), anchors={"u1": "Alice"})
    assert store.anchors() == {"u1": "Alice"}
    assert [a["attempt"] for a in store.attempts("r1")] == [1, 2]
    store.dispose()


def test_sqlite_commits_without_waiting_on_the_disk_in_wal_mode(tmp_path) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.dispose()
