"""Alembic environment for the audit schema.

Normally run by :func:`identity_sync.audit.migrate.upgrade`, which passes an open connection (with
the migration lock held) in ``config.attributes["connection"]``. Offline mode (``--sql``) renders
the DDL for a DBA from ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from identity_sync.audit.schema import VERSION_TABLE, metadata

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(target_metadata=metadata, version_table=VERSION_TABLE, compare_type=True,
                      **kwargs)  # type: ignore[arg-type]


if context.is_offline_mode():
    url = config.get_main_option("sqlalchemy.url")
    _configure(url=url, literal_binds=True, render_as_batch=str(url).startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is None:  # run from the alembic command line with -x / sqlalchemy.url
        engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
        with engine.begin() as connection:
            _configure(connection=connection,
                       render_as_batch=connection.dialect.name == "sqlite")
            context.run_migrations()
        engine.dispose()
    else:
        _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():  # joins the caller's transaction: one commit at the end
            context.run_migrations()
