"""Hooks resolve Airflow connections (env-var form, as a deployment or the demo sets them) into
the domain clients, lazily, and test them against the emulators."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_idcs_app,
)
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync_airflow.hooks import AuditStoreHook, BitbucketHook, IdcsHook


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **conn: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.fixture(scope="module")
def idcs_url() -> Iterator[str]:
    app = create_idcs_app()
    app.state.emulator.load_dict(generate_idcs_org(3, 25, 4))
    with serving(app) as server:
        yield server.base_url


@pytest.fixture(scope="module")
def bitbucket_url() -> Iterator[str]:
    with serving(create_bitbucket_app()) as server:
        yield server.base_url


def test_hooks_have_provider_shape() -> None:
    assert (IdcsHook.conn_type, IdcsHook.default_conn_name) == ("idcs", "idcs_default")
    assert (BitbucketHook.conn_type, BitbucketHook.default_conn_name) == ("bitbucket",
                                                                         "bitbucket_default")
    assert AuditStoreHook.default_conn_name == "sync_audit_db"


def test_idcs_hook_builds_client_lazily_and_tests_connection(monkeypatch, idcs_url) -> None:
    host, port = idcs_url.removeprefix("http://").split(":")
    set_conn(monkeypatch, "idcs_default", conn_type="idcs", host=host, port=int(port),
             schema="http", login=DEMO_CLIENT_ID, password=DEMO_CLIENT_SECRET,
             extra={"app_id": DEMO_APP_ID})
    hook = IdcsHook()
    assert hook.client is None  # nothing happens at construction
    client = hook.get_conn()
    assert hook.get_conn() is client
    assert client.base_url == idcs_url and hook.app_id == DEMO_APP_ID
    ok, message = hook.test_connection()
    assert ok and message == "Connected: token issued, 25 users visible"


def test_idcs_hook_reports_bad_secret(monkeypatch, idcs_url) -> None:
    set_conn(monkeypatch, "idcs_default", conn_type="idcs", host=idcs_url, login=DEMO_CLIENT_ID,
             password="wrong")
    ok, message = IdcsHook().test_connection()
    assert not ok and "401" in message and "invalid_client" in message


def test_bitbucket_hook_tests_connection(monkeypatch, bitbucket_url) -> None:
    set_conn(monkeypatch, "bitbucket_default", conn_type="bitbucket", host=bitbucket_url,
             login=DEMO_ADMIN_USER, password=DEMO_ADMIN_PASSWORD, extra={"verify": "false"})
    hook = BitbucketHook()
    assert hook.get_conn().session.verify is False
    assert hook.test_connection() == (True, "Connected: admin API answered (1 user on first page)")
    set_conn(monkeypatch, "bitbucket_default", conn_type="bitbucket", host=bitbucket_url,
             login=DEMO_ADMIN_USER, password="wrong")
    ok, message = BitbucketHook().test_connection()
    assert not ok and "Authentication failed" in message


def test_audit_hook_urls(monkeypatch, tmp_path) -> None:
    set_conn(monkeypatch, "sync_audit_db", conn_type="sqlite", host=str(tmp_path / "a.db"))
    hook = AuditStoreHook()
    assert hook.sqlalchemy_url() == f"sqlite:///{tmp_path / 'a.db'}"
    assert hook.test_connection()[0]
    set_conn(monkeypatch, "sync_audit_db", conn_type="postgres", host="db", port=5432,
             login="sync", password="p@ss", schema="sync_audit")
    assert AuditStoreHook().sqlalchemy_url() == "postgresql+psycopg://sync:p%40ss@db:5432/sync_audit"
    set_conn(monkeypatch, "sync_audit_db", conn_type="sqlite", host="relative.db")
    with pytest.raises(ValueError, match="absolute file path"):
        AuditStoreHook().sqlalchemy_url()
    set_conn(monkeypatch, "sync_audit_db", conn_type="mysql", host="db")
    with pytest.raises(ValueError, match="unsupported conn_type 'mysql'"):
        AuditStoreHook().sqlalchemy_url()
