"""
### Audit store housekeeping

Once a day, deletes sync runs that ended more than `IDSYNC_AUDIT_RETENTION_DAYS` days ago
(default 365) from the audit store (`sync_audit_db`), with their snapshots, plan operations,
attempts, data-quality results and quarantine rows. Identity anchors are never pruned: they are how
the sync recognises a renamed user. Also upgrades the audit schema if a release added a revision.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id=Path(__file__).stem,
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["identity", "audit", "housekeeping"],
    doc_md=__doc__,
    default_args={"owner": "identity-sync", "retries": 2, "retry_delay": timedelta(minutes=5)},
)
def sync_audit_housekeeping() -> None:
    @task
    def prune_audit_store() -> dict[str, int]:
        from identity_sync.audit.retention import prune_from_env
        from identity_sync_airflow.hooks import AuditStoreHook

        return prune_from_env(AuditStoreHook().get_conn())

    prune_audit_store()


sync_audit_housekeeping()
