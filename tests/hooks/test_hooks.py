"""Hooks resolve Airflow connections (env-var form, as a deployment or the demo sets them) into
the domain clients, lazily, and test them against the emulators."""

from __future__ import annotations

import json
import logging
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
from identity_sync_airflow.hooks import (
    AuditStoreHook,
    BitbucketHook,
    IdcsHook,
    InsecureConnectionError,
    _verify,
)


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


# ---- strict transport ------------------------------------------------------------------------

def test_remote_host_needs_https_and_verification(monkeypatch) -> None:
    set_conn(monkeypatch, "idcs_default", conn_type="idcs", host="http://idcs.example.com",
             login="cid", password="s3cret-value")
    with pytest.raises(InsecureConnectionError) as err:
        IdcsHook().get_conn()
    message = str(err.value)
    assert "'idcs_default' to idcs.example.com refused: plain http" in message
    assert '"allow_insecure": true' in message and "s3cret-value" not in message
    ok, said = IdcsHook().test_connection()  # the Test button says the same, sends nothing
    assert not ok and said == message
    set_conn(monkeypatch, "bitbucket_default", conn_type="bitbucket",
             host="https://bitbucket.example.com", login="svc", password="pw",
             extra={"verify": False})
    with pytest.raises(InsecureConnectionError, match="'bitbucket_default' to "
                       r"bitbucket.example.com refused: TLS certificate verification off"):
        BitbucketHook().get_conn()
    set_conn(monkeypatch, "bitbucket_default", conn_type="bitbucket",
             host="bitbucket.example.com", schema="http", login="svc", password="pw",
             extra={"verify": "FALSE"})
    with pytest.raises(InsecureConnectionError, match=r"plain http .* and TLS certificate"):
        BitbucketHook().get_conn()


def test_remote_https_with_verification_is_accepted_quietly(monkeypatch, caplog) -> None:
    set_conn(monkeypatch, "idcs_default", conn_type="idcs", host="idcs.example.com",
             login="cid", password="secret")
    with caplog.at_level(logging.WARNING):
        client = IdcsHook().get_conn()  # builds the client only: nothing is sent yet
    assert client.base_url == "https://idcs.example.com" and client.session.verify is True
    assert "insecure" not in caplog.text


@pytest.mark.parametrize("allow", [True, "true", "True"])
def test_allow_insecure_lets_it_through_with_a_warning(monkeypatch, caplog, allow) -> None:
    set_conn(monkeypatch, "bitbucket_default", conn_type="bitbucket",
             host="http://bitbucket.test.internal:7990", login="svc", password="pw",
             extra={"verify": False, "allow_insecure": allow})
    for _ in range(2):  # every run (a new hook per task) says it again
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            client = BitbucketHook().get_conn()
        assert client.base_url == "http://bitbucket.test.internal:7990"
        assert client.session.verify is False
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            "connection 'bitbucket_default' to bitbucket.test.internal is insecure: plain http "
            "(no TLS: credentials and answers travel unencrypted) and TLS certificate "
            'verification off (verify: false) (allowed by its extra "allow_insecure": true)']


@pytest.mark.parametrize("host", ["http://127.0.0.1:8701", "http://127.0.0.42:1",
                                  "http://localhost:8702", "http://[::1]:8701"])
def test_loopback_may_use_plain_http(monkeypatch, caplog, host) -> None:
    set_conn(monkeypatch, "bitbucket_default", conn_type="bitbucket", host=host, login="svc",
             password="pw")
    with caplog.at_level(logging.WARNING):
        assert BitbucketHook().get_conn().base_url == host
    assert "insecure" not in caplog.text


def test_allow_insecure_itself_is_parsed_strictly(monkeypatch) -> None:
    set_conn(monkeypatch, "idcs_default", conn_type="idcs", host="http://idcs.example.com",
             login="cid", password="secret", extra={"allow_insecure": "yes"})
    with pytest.raises(ValueError, match="'idcs_default': extra 'allow_insecure' must be true"):
        IdcsHook().get_conn()


@pytest.fixture
def ca_file(tmp_path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


@pytest.mark.parametrize(("extra", "expected"), [
    ({}, True),
    ({"verify": None}, True),  # the form's empty field
    ({"verify": True}, True),
    ({"verify": False}, False),
    ({"verify": "true"}, True),  # URI-form connections carry strings
    ({"verify": "FALSE"}, False),
    ({"verify": "False"}, False),
    ({"verify": "CA"}, "CA"),  # the path of an existing CA bundle
    ({"ca_bundle": "CA", "verify": False}, "CA"),  # the form's CA bundle field wins
    ({"ca_bundle": "", "verify": None}, True),
])
def test_verify_values(extra, expected, ca_file) -> None:
    def fill(value):
        return ca_file if value == "CA" else value

    assert _verify({k: fill(v) for k, v in extra.items()}, "idcs_default") == fill(expected)


@pytest.mark.parametrize(("extra", "says"), [
    ({"verify": 0}, "extra 'verify' is not valid (0)"),
    ({"verify": 1}, "extra 'verify' is not valid (1)"),
    ({"verify": "no"}, "extra 'verify' names no existing CA bundle file ('no')"),
    ({"verify": "0"}, "extra 'verify' names no existing CA bundle file ('0')"),
    ({"verify": ""}, "extra 'verify' is not valid ('')"),
    ({"verify": "/nonexistent/ca.pem"}, "names no existing CA bundle file ('/nonexistent/ca.pem')"),
    ({"verify": ["x"]}, "extra 'verify' is not valid (['x'])"),
    ({"ca_bundle": "/nonexistent/ca.pem"}, "extra 'ca_bundle' must be the path of an existing"),
])
def test_invalid_verify_values_name_the_connection_and_field(extra, says) -> None:
    with pytest.raises(ValueError) as err:
        _verify(extra, "bitbucket_default")
    assert str(err.value).startswith("connection 'bitbucket_default': extra '")
    assert says in str(err.value)


def test_invalid_verify_fails_the_connection_test(monkeypatch) -> None:
    set_conn(monkeypatch, "bitbucket_default", conn_type="bitbucket",
             host="https://bitbucket.example.com", login="svc", password="pw",
             extra={"verify": "no"})
    ok, message = BitbucketHook().test_connection()
    assert not ok and "'bitbucket_default': extra 'verify'" in message
