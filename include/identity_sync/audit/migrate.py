"""Bring an audit database to the newest schema revision, safely from many workers at once.

Every task of a sync builds its own store, and the first tasks of mapped batches start together,
so the upgrade runs under a lock: a PostgreSQL transaction-level advisory lock, or SQLite's
``BEGIN IMMEDIATE`` (one writer per file). Inside the lock the revision is read again, so the
losers of the race find the work done and change nothing. A database made by the first releases
(``create_all``, no version table) is stamped at the baseline revision and upgraded in place.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from .schema import VERSION_TABLE, metadata

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema ``metadata.create_all`` produced before migrations existed
PG_LOCK_KEY = 0x1D5_A0D1_7000  # pg_advisory_xact_lock key for "idsync audit migrate"
WRITE = {"idsync_write": True}  # execution option: SQLite transaction starts BEGIN IMMEDIATE


def config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config built in code: no ``alembic.ini`` is needed at runtime."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    """Read once per process: every task opens a store, and the revisions never change."""
    head = ScriptDirectory.from_config(config()).get_current_head()
    assert head is not None, "the audit package ships no migrations"
    return head


def current_revision(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Upgrade to ``revision`` (default head) unless already there; returns the revision now."""
    target = head_revision() if revision == "head" else revision
    with engine.connect() as conn:
        if current_revision(conn) == target:  # fast path: one SELECT, no lock
            return target
    with engine.connect().execution_options(**WRITE) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        current = current_revision(conn)
        if current == target:
            return target
        if current is None and inspect(conn).has_table("sync_runs"):
            MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).stamp(
                ScriptDirectory.from_config(config()), BASELINE)
        command.upgrade(config(conn), target)
        return target


def schema_diff(engine: Engine) -> list[object]:
    """Alembic autogenerate's differences between the tables in code and the database (empty
    when the migrations produce exactly ``schema.metadata``)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE,
                                                     "compare_type": True})
        return list(compare_metadata(ctx, metadata))
