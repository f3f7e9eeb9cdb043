"""Shared fixtures. Airflow is pointed at a throw-away home before anything imports it."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="idsync-airflow-home-"))
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    "IDSYNC_RETRY_DELAY_SECONDS": "1",
})

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is absent on a developer machine; fail under CI=true."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        unavailable(f"{name} is not reachable on {host}:{port} ({exc})", "start it to run this test")


def require_command(name: str, package: str) -> str:
    """Like ``require_service`` for a program on PATH; returns its path."""
    path = shutil.which(name)
    if not path:
        unavailable(f"{name} is not installed (Debian package {package})",
                    "install it to run this test")
    return str(path)


def unavailable(message: str, remedy: str) -> NoReturn:
    """A test's service or program is missing: skip on a developer machine, fail under CI=true."""
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(f"{message}; {remedy}")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata DB (SQLite, in a temp home), migrated once per session."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL, env=os.environ.copy())
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session on 127.0.0.1:5432 (dropped afterwards)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    user = os.environ.get("IDSYNC_TEST_PG_USER", "postgres")
    name = f"idsync_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"host=127.0.0.1 port=5432 user={user} dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
    with psycopg.connect(f"host=127.0.0.1 port=5432 user={user} dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty audit database URL, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    base = request.getfixturevalue("postgres_server_url")
    # One schema-free database per test: drop all tables between tests.
    from sqlalchemy import create_engine

    from identity_sync.audit.schema import metadata

    engine = create_engine(base)
    metadata.drop_all(engine)
    engine.dispose()
    yield base
    engine = create_engine(base)
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(autouse=True)
def _loggers_enabled() -> None:
    """Airflow's logging config (applied by whichever test first runs a DAG) disables the loggers
    that existed before it, and the benchmark harness (run in-process by tests/bench) quiets
    ``identity_sync``: tests that read our log lines must not depend on test order."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith(("identity_sync", "urllib3")):
            logger.disabled = False
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
