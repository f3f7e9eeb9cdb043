"""Migrations on SQLite and PostgreSQL: from an empty database, from the previous revision with
data in it, from a pre-migrations ``create_all`` database, and under concurrent first use; and
the tables in code match what the migrations build."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import create_engine, insert, inspect, select, text

from identity_sync.audit import schema as t
from identity_sync.audit.migrate import (
    WRITE,
    config,
    current_revision,
    head_revision,
    schema_diff,
    upgrade,
)
from identity_sync.audit.store import AuditStore

NEW_INDEXES = {"ix_plan_operations_target", "ix_plan_operations_idcs_id",
               "ix_operation_attempts_at", "ix_identity_anchors_bitbucket_name",
               "ix_quarantine_record_id", "ix_sync_runs_started_at", "ix_sync_runs_ended_at",
               "ix_plan_operations_batch"}


def revision_of(url: str) -> str | None:
    engine = create_engine(url)
    with engine.connect() as conn:
        rev = current_revision(conn)
    engine.dispose()
    return rev


def indexes(store: AuditStore) -> set[str]:
    insp = inspect(store.engine)
    return {ix["name"] for table in insp.get_table_names() for ix in insp.get_indexes(table)}


def test_head_is_the_fourth_revision() -> None:
    assert head_revision() == "0005"


def test_empty_database_is_migrated_to_head_on_first_use(audit_url: str) -> None:
    store = AuditStore(audit_url)
    assert revision_of(audit_url) == "0005"
    assert indexes(store) >= NEW_INDEXES
    assert schema_diff(store.engine) == []  # autogenerate finds nothing to change
    with store.engine.connect() as conn:
        assert conn.execute(text(f"select count(*) from {t.VERSION_TABLE}")).scalar() == 1
    AuditStore(audit_url).dispose()  # opening again is a no-op
    assert revision_of(audit_url) == "0005"
    store.dispose()


def test_previous_revision_with_data_is_upgraded_in_place(audit_url: str) -> None:
    old = AuditStore(audit_url, migrate=False)
    upgrade(old.engine, "0001")
    assert revision_of(audit_url) == "0001"
    diff = schema_diff(old.engine)
    assert {d[0] for d in diff if isinstance(d, tuple)} >= {"add_column", "add_index"}
    started = datetime(2025, 6, 1, tzinfo=UTC)
    with old.engine.begin() as conn:  # rows written by the previous release
        conn.execute(text("insert into sync_runs (run_id, dag_id, trigger, mode, dry_run, status,"
                          " started_at) values ('r0', 'd', 'manual', 'full', false, 'succeeded',"
                          " :at)"), {"at": started})
        conn.execute(text("insert into plan_operations (run_id, op_id, seq, phase, batch, kind,"
                          " target, params, reason, status, updated_at) values ('r0', 'op1', 0,"
                          " 'users', 0, 'create_user', 'alice', '{\"name\": \"alice\"}', 'new',"
                          " 'done', :at)"), {"at": started})
    old.dispose()

    store = AuditStore(audit_url)
    assert revision_of(audit_url) == "0005"
    assert schema_diff(store.engine) == []
    assert indexes(store) >= NEW_INDEXES
    run = store.get_run("r0")
    assert (run["status"], run["rules_version"]) == ("succeeded", None)
    [op] = store.plan("r0")
    assert (op["target"], op["params"], op["planned_at"]) == ("alice", {"name": "alice"}, None)
    store.start_run("r1", dag_id="d", trigger="manual", mode="full", dry_run=False,
                    rules_hash="h", rules_version="3")
    assert store.get_run("r1")["rules_version"] == "3"
    store.dispose()


def test_pre_migration_create_all_database_is_adopted(audit_url: str) -> None:
    """The first releases made the tables with ``create_all`` and no version table."""
    engine = create_engine(audit_url)
    store = AuditStore(audit_url, migrate=False)
    upgrade(store.engine, "0001")
    with engine.begin() as conn:
        conn.execute(text(f"drop table {t.VERSION_TABLE}"))
        conn.execute(insert(t.identity_anchors).values(
            idcs_id="u1", bitbucket_name="alice", first_run_id="r0", last_run_id="r0",
            updated_at=datetime(2025, 6, 1, tzinfo=UTC)))
    store.dispose()
    assert revision_of(audit_url) is None
    store = AuditStore(audit_url)
    assert revision_of(audit_url) == "0005"
    assert store.anchors() == {"u1": "alice"}
    assert schema_diff(store.engine) == []
    store.dispose()
    engine.dispose()


def test_downgrade_and_upgrade_round_trip(audit_url: str) -> None:
    store = AuditStore(audit_url)
    store.save_anchors("r1", {"u1": "alice"})
    with store.engine.connect().execution_options(**WRITE) as conn, conn.begin():
        command.downgrade(config(conn), "0001")
    assert revision_of(audit_url) == "0001"
    assert not NEW_INDEXES & indexes(store)
    upgrade(store.engine)
    assert revision_of(audit_url) == "0005" and store.anchors() == {"u1": "alice"}
    store.dispose()


def test_version_table_is_not_alembic_version(audit_url: str) -> None:
    """Sharing a database with another Alembic application must not mix their histories."""
    store = AuditStore(audit_url)
    names = set(inspect(store.engine).get_table_names())
    assert t.VERSION_TABLE in names and "alembic_version" not in names
    with store.engine.connect() as conn:
        assert conn.execute(select(t.schema_version.c.version_num)).scalar() == "0005"
    store.dispose()


def test_offline_sql_for_a_dba(capsys) -> None:
    """``--sql`` mode renders the DDL without a database (for change-controlled PostgreSQL)."""
    command.upgrade(config(url="postgresql+psycopg://sync@db/audit"), "head", sql=True)
    ddl = capsys.readouterr().out
    assert "CREATE TABLE sync_runs" in ddl and "CREATE INDEX ix_plan_operations_target" in ddl
    assert "ALTER TABLE sync_runs ADD COLUMN rules_version VARCHAR(100)" in ddl
    assert f"CREATE TABLE {t.VERSION_TABLE}" in ddl
