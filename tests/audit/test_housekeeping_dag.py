"""The housekeeping DAG: daily, retried, and its task prunes through the package."""

from __future__ import annotations

from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "sync_audit_housekeeping.py"


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.get_dag("sync_audit_housekeeping")


def test_schedule_and_policy(dag) -> None:
    assert dag.catchup is False and "audit" in dag.tags
    assert dag.default_args["retries"] >= 2
    assert [t.task_id for t in dag.tasks] == ["prune_audit_store"]
    assert dag.schedule == "@daily"


def test_task_prunes_the_connected_store_with_the_configured_days(
        dag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    from datetime import timedelta

    from identity_sync.audit.store import AuditStore, utcnow

    db = tmp_path / "audit.db"
    store = AuditStore(f"sqlite:///{db}")
    for run_id, age in (("old", 40), ("new", 5)):
        store.start_run(run_id, dag_id="d", trigger="manual", mode="full", dry_run=False,
                        rules_hash="h")
        store.update_run(run_id, status="succeeded", ended_at=utcnow() - timedelta(days=age))
    store.save_anchors("old", {"u1": "alice"})
    monkeypatch.setenv("AIRFLOW_CONN_SYNC_AUDIT_DB",
                       json.dumps({"conn_type": "sqlite", "host": str(db)}))
    monkeypatch.setenv("IDSYNC_AUDIT_RETENTION_DAYS", "30")
    deleted = dag.get_task("prune_audit_store").python_callable()
    assert deleted["sync_runs"] == 1
    assert [r["run_id"] for r in store.runs()] == ["new"]
    assert store.anchors() == {"u1": "alice"}
    store.dispose()
