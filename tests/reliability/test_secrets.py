"""Secrets never leak, and TLS is verified by default.

One full sync through the DAG itself (``dag.test()``), with known secret values, while both
emulators inject faults (so retries, warnings and failed attempts are part of what is searched).
Then every output is searched for the IDCS client secret, the Bitbucket password (also as the
Basic-auth header value) and every bearer token IDCS issued: the log records and everything
printed, every file under AIRFLOW_HOME (task logs, the metadata database with XCom and rendered
templates, byte for byte), every row of every audit table (snapshots decompressed), the run
summary the demo prints, and the messages of the errors a wrong secret produces.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import create_engine, inspect, select, text

from identity_sync import pipeline
from identity_sync.audit import schema
from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import create_bitbucket_app
from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import DEMO_APP_ID, DEMO_CLIENT_ID, create_idcs_app
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.http import ApiError, HttpSettings
from identity_sync.idcs.client import IdcsClient
from identity_sync.loading.apply import ApplyError
from identity_sync.loading.breaker import BreakerSettings
from identity_sync.planning.operations import PHASE_ORDER

DAGS = Path(__file__).resolve().parents[2] / "dags"
IDCS_SECRET = "idcs-S3cr3t-5b7f1e9a4c"
BB_PASSWORD = "bb-P4ss-c91d27e3"
SERVICE = "sync-admin"
FAULTS = {"seed": 5, "error_rate": 0.04, "error_statuses": [429, 502, 503],
          "retry_after": 0.01, "reset_rate": 0.01, "slow_body_rate": 0.01,
          "slow_body_seconds": 0.05}


class Everything(logging.Handler):
    """Every log record of the run, formatted with its exception, as a log file would hold."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def issued_tokens(app: Any) -> list[str]:
    """Record every bearer token the IDCS emulator hands out."""
    route = next(r for r in app.routes if getattr(r, "path", "") == "/oauth2/v1/token")
    tokens = route.endpoint.__self__.tokens
    issued: list[str] = []
    issue = tokens.issue

    def recording(*args: Any, **kwargs: Any) -> str:
        token = issue(*args, **kwargs)
        issued.append(token)
        return token

    tokens.issue = recording
    return issued


def forms(secret: str) -> list[bytes]:
    """The secret as text, and as it would sit inside JSON or a URL."""
    raw = secret.encode()
    return [raw, json.dumps(secret).encode()[1:-1], secret.replace("-", "%2D").encode()]


def leaks(blob: bytes, secrets: dict[str, str]) -> list[str]:
    return [name for name, secret in secrets.items()
            if any(form in blob for form in forms(secret))]


def audit_rows(url: str) -> bytes:
    """Every row of every audit table as text, gzip snapshots opened."""
    engine = create_engine(url)
    out: list[str] = []
    with engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes):
                        value = gzip.decompress(value).decode()  # noqa: PLW2901
                    out.append(str(value))
    engine.dispose()
    return "\n".join(out).encode()


def metadata_rows(url: str) -> bytes:
    """Every row of every table of Airflow's metadata database (XCom, rendered fields, ...)."""
    engine = create_engine(url)
    out: list[str] = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                out.append(repr(tuple(row)))
    engine.dispose()
    return "\n".join(out).encode()


@pytest.fixture
def emulators(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[dict[str, Any]]:
    org = generate_idcs_org(13, 120, 10)
    org["clients"] = [{"client_id": DEMO_CLIENT_ID, "client_secret": IDCS_SECRET}]
    idcs_app, bb_app = create_idcs_app(), create_bitbucket_app()
    idcs_app.state.emulator.load_dict(org)
    bb_app.state.emulator.find_user(SERVICE).password = BB_PASSWORD
    tokens = issued_tokens(idcs_app)
    with serving(idcs_app) as idcs, serving(bb_app) as bb:
        audit = tmp_path / "audit.db"
        for conn_id, conn in {
            "idcs_default": {"conn_type": "idcs", "host": idcs.base_url, "login": DEMO_CLIENT_ID,
                             "password": IDCS_SECRET, "extra": {"app_id": DEMO_APP_ID}},
            "bitbucket_default": {"conn_type": "bitbucket", "host": bb.base_url,
                                  "login": SERVICE, "password": BB_PASSWORD},
            "sync_audit_db": {"conn_type": "sqlite", "host": str(audit)},
        }.items():
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        idcs_app.state.faults.configure(FAULTS)
        bb_app.state.faults.configure(FAULTS)
        yield {"idcs": idcs.base_url, "bitbucket": bb.base_url, "bb_app": bb_app,
               "audit_url": f"sqlite:///{audit}", "tokens": tokens, "airflow_home": airflow_db}


def test_a_full_dag_run_under_faults_leaks_no_secret(emulators: dict[str, Any],
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    handler = Everything()
    logging.getLogger().addHandler(handler)
    try:
        bag = DagBag(dag_folder=str(DAGS / "idcs_bitbucket_sync.py"))
        dag_run = bag.get_dag("idcs_bitbucket_sync").test(run_conf={})
    finally:
        logging.getLogger().removeHandler(handler)
    assert str(dag_run.state) == "success"
    injected = emulators["bb_app"].state.faults.stats()["injected"]
    assert sum(injected.values()) > 0  # the run did go through faults
    store = AuditStore(emulators["audit_url"])
    summary = pipeline.summarise(store, dag_run.run_id)
    assert summary["users_created"] > 30 and summary["failures"] == 0

    assert emulators["tokens"], "IDCS issued no token?"
    basic = base64.b64encode(f"{SERVICE}:{BB_PASSWORD}".encode()).decode()
    secrets = {"IDCS client secret": IDCS_SECRET, "Bitbucket password": BB_PASSWORD,
               "Basic auth header": basic,
               **{f"bearer token {i}": t for i, t in enumerate(emulators["tokens"])}}
    printed = capfd.readouterr()
    outputs: dict[str, bytes] = {
        "log records": "\n".join(handler.lines).encode(),
        "stdout/stderr": (printed.out + printed.err).encode(),
        "audit rows": audit_rows(emulators["audit_url"]),
        "Airflow metadata DB rows": metadata_rows(os.environ[
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]),
        "demo summary": pipeline.format_summary(summary).encode(),
    }
    home: Path = emulators["airflow_home"]
    for path in home.rglob("*"):
        if path.is_file():
            outputs[f"file {path.relative_to(home)}"] = path.read_bytes()
    assert any("XCom" in name or "metadata" in name for name in outputs)
    assert b"sync_run" in outputs["Airflow metadata DB rows"]  # XCom rows were searched
    # the search does find what it looks for, and the outputs hold the run's own details
    assert leaks(f"x{emulators['tokens'][0]}x".encode(), secrets) == ["bearer token 0"]
    assert any("batch users/0" in line for line in handler.lines)
    assert any(emulators["bitbucket"] in line for line in handler.lines)  # retried requests
    found = {where: leaks(blob, secrets) for where, blob in outputs.items()}
    assert {where: names for where, names in found.items() if names} == {}


def test_errors_from_wrong_secrets_do_not_repeat_them(emulators: dict[str, Any]) -> None:
    fast = HttpSettings(timeout=5, retries=0)
    wrong_secret, wrong_password = "wrong-1dcs-secret-8841", "wrong-bb-pass-2290"
    with pytest.raises(ApiError) as idcs_err:
        IdcsClient(emulators["idcs"], DEMO_CLIENT_ID, wrong_secret,
                   settings=fast).get("/admin/v1/Users", {"count": 0})
    emulators["bb_app"].state.faults.configure({})
    with pytest.raises(ApiError) as bb_err:
        BitbucketClient(emulators["bitbucket"], SERVICE, wrong_password,
                        settings=fast).request("GET", "/admin/users")
    for err, secret in ((idcs_err.value, wrong_secret), (bb_err.value, wrong_password)):
        text_ = f"{err} {err!r} {err.args} {getattr(err, 'detail', '')}"
        assert secret not in text_ and err.status in (400, 401)


# ---- failing writes: the initial passwords stay inside the client ---------------------------

NO_BREAKER = BreakerSettings(max_failure_percent=100.0, min_operations=10**6,
                             max_consecutive_failures=10**6, max_auth_failures=10**6)
# Fast but real: a few quick retries, short timeouts, no client-side pacing.
QUICK = HttpSettings(timeout=1.0, connect_timeout=1.0, retries=2, backoff_factor=0.01,
                     backoff_max=0.05, default_retry_after=0.01, retry_max_wait=10.0,
                     rate_limit_fill_rate=0)
FAILING = {
    # nothing listens: requests' ConnectionError carries the whole URL, query string included
    "closed port": None,
    # every request (the read-backs too) has its connection dropped, or answers 500
    "dropped connections": {"seed": 3, "reset_rate": 1.0},
    "server errors": {"seed": 3, "error_rate": 1.0, "error_status": 500},
}


def closed_port_url() -> str:
    """A local URL nothing listens on (a port the OS just handed out, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def generated_passwords(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every initial password the Bitbucket client makes up."""
    from identity_sync.bitbucket import client as bb_client

    made: list[str] = []
    real = bb_client.secrets.token_urlsafe

    def recording(nbytes: int | None = None) -> str:
        value = real(nbytes)
        made.append(value)
        return value

    monkeypatch.setattr(bb_client.secrets, "token_urlsafe", recording)
    return made


def page_html(store: AuditStore, run_id: str, names: list[str]) -> bytes:
    """The Identity sync page as an operator sees it: overview, run page, some user pages."""
    from fastapi.testclient import TestClient

    from identity_sync_airflow.ui.airflow_auth import airflow_user
    from identity_sync_airflow.ui.sync_page import create_app

    app = create_app(lambda: store)
    app.dependency_overrides[airflow_user] = lambda: "tester"
    out: list[str] = []
    with TestClient(app, root_path="/identity-sync") as client:
        for path, params in [("/", {}), ("/run", {"id": run_id}),
                             ("/run", {"id": run_id, "status": "failed"}),
                             *[("/user", {"who": name}) for name in names[:3]]]:
            resp = client.get(path, params=params)
            assert resp.status_code == 200, resp.text
            out.append(resp.text)
    return "\n".join(out).encode()


@pytest.mark.parametrize("failure", list(FAILING))
def test_failing_creates_leak_no_initial_password(failure: str, make_env: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    org = generate_idcs_org(11, 12, 3)
    org["clients"] = [{"client_id": DEMO_CLIENT_ID, "client_secret": IDCS_SECRET}]
    env = make_env(org)
    env.bb_state.find_user(SERVICE).password = BB_PASSWORD
    made = generated_passwords(monkeypatch)
    idcs = IdcsClient(env.idcs_url, DEMO_CLIENT_ID, IDCS_SECRET, settings=QUICK)
    reader = BitbucketClient(env.bb_url, SERVICE, BB_PASSWORD, settings=QUICK)
    store, run_id, rules = env.store, f"secrets-{failure.replace(' ', '-')}", env.rules
    handler = Everything()
    logging.getLogger().addHandler(handler)
    returned: list[Any] = []  # what the stages hand on (XCom in the DAG)
    errors: list[str] = []
    try:
        pipeline.start(store, run_id, dag_id="idcs_bitbucket_sync", trigger="manual",
                       mode="full", dry_run=False, rules_hash="secrets")
        returned.append(pipeline.extract(store, run_id, idcs, rules, DEMO_APP_ID))
        returned.append(pipeline.check_quality(store, run_id))
        returned.append(pipeline.map_desired(store, run_id, rules))
        returned.append(pipeline.check_desired_quality(store, run_id, rules))
        returned.append(pipeline.read_bitbucket(store, run_id, reader))
        planned = pipeline.plan(store, run_id, rules, SERVICE, pipeline.RunOptions())
        returned.append(planned)
        assert not planned["approval"]["needed"]
        if FAILING[failure] is None:
            writer = BitbucketClient(closed_port_url(), SERVICE, BB_PASSWORD, settings=QUICK)
        else:
            env.bb_app.state.faults.configure(FAILING[failure])
            writer = BitbucketClient(env.bb_url, SERVICE, BB_PASSWORD, settings=QUICK)
        for phase in PHASE_ORDER:  # every batch, even after a failed phase: all creates tried
            for batch in planned["batches"].get(str(phase), []):
                outcome = pipeline.apply(store, writer, batch, breaker=NO_BREAKER)
                returned.append(vars(outcome))
                try:
                    outcome.raise_for_failures(batch["label"])
                except ApplyError as exc:
                    errors += [str(exc), repr(exc)]
        for client in (BitbucketClient(closed_port_url(), SERVICE, BB_PASSWORD, settings=QUICK),
                       writer):
            with pytest.raises(ApiError) as err:
                client.create_user("someone.else", "Someone Else", "se@example.com")
            errors += [str(err.value), repr(err.value), str(err.value.args),
                       str(vars(err.value))]
        with pytest.raises(ApiError) as err:
            IdcsClient(closed_port_url(), DEMO_CLIENT_ID, IDCS_SECRET,
                       settings=QUICK).get("/admin/v1/Users", {"count": 0})
        errors += [str(err.value), repr(err.value), str(vars(err.value))]
        finished = pipeline.finish(store, run_id)
    finally:
        logging.getLogger().removeHandler(handler)
    summary = pipeline.summarise(store, run_id)
    assert summary["failures"] > 0 and summary["users_created"] == 0, summary
    assert len(made) >= 12  # every planned create made up a password, and none landed
    names = [op["target"] for op in store.plan(run_id)]
    outputs = {
        "log records": "\n".join(handler.lines).encode(),
        "audit rows": audit_rows(store.url),
        "stage return values": json.dumps(returned, default=repr).encode(),
        "finish/summary": json.dumps([finished, summary], default=repr).encode()
        + pipeline.format_summary(summary).encode(),
        "error texts": "\n".join(errors).encode(),
        "Identity sync page": page_html(store, run_id, names),
    }
    assert b"failed" in outputs["Identity sync page"]
    secrets = {"IDCS client secret": IDCS_SECRET, "Bitbucket password": BB_PASSWORD,
               **{f"initial password {i}": p for i, p in enumerate(made)}}
    found = {where: sorted({n.rsplit(" ", 1)[0] for n in leaks(blob, secrets)})
             for where, blob in outputs.items()}
    assert {where: names for where, names in found.items() if names} == {}
    assert any("no answer" in e and "/admin/users" in e for e in errors)  # texts still say what


def test_hooks_hand_every_secret_to_airflows_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Bitbucket password and the IDCS client secret are masked once a hook builds its
    client, and every initial password as the client makes it up (before it is sent)."""
    from airflow.sdk.log import redact as airflow_redact

    from identity_sync_airflow import hooks

    masked: list[str] = []
    real_mask = hooks.mask_secret

    def recording(secret: Any, name: str | None = None) -> None:
        masked.append(secret)
        real_mask(secret, name)

    monkeypatch.setattr(hooks, "mask_secret", recording)
    made = generated_passwords(monkeypatch)
    closed = closed_port_url()
    for conn_id, conn in {
        "idcs_secrets_test": {"conn_type": "idcs", "host": closed, "login": DEMO_CLIENT_ID,
                              "password": IDCS_SECRET},
        "bitbucket_secrets_test": {"conn_type": "bitbucket", "host": closed, "login": SERVICE,
                                   "password": BB_PASSWORD},
    }.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    hooks.IdcsHook("idcs_secrets_test").get_conn()
    client = hooks.BitbucketHook("bitbucket_secrets_test").get_conn()
    client.transport.settings = QUICK
    assert masked == [IDCS_SECRET, BB_PASSWORD]
    with pytest.raises(ApiError):
        client.create_user("alice", "Alice", "alice@example.com")
    assert len(made) == 1 and masked[2:] == made
    for secret in (IDCS_SECRET, BB_PASSWORD, made[0]):
        assert secret not in airflow_redact(f"logged: {secret} ...")


# ---- TLS -------------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A CA-less self-signed certificate for 127.0.0.1 (its own CA bundle)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bitbucket.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = uvicorn.Config(create_bitbucket_app(), host="127.0.0.1", port=0,
                            log_level="warning", ssl_certfile=str(cert), ssl_keyfile=str(key))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.02)
    url = f"https://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    settings = HttpSettings(timeout=5, retries=0, rate_limit_fill_rate=0)
    try:
        default = BitbucketClient(url, SERVICE, "sync-password", settings=settings)
        with pytest.raises(ApiError) as err:
            default.request("GET", "/admin/users")
        assert err.value.status is None and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
        assert default.session.verify is True
        trusted = BitbucketClient(url, SERVICE, "sync-password", settings=settings,
                                  verify=str(cert))
        assert trusted.request_json("GET", "/admin/users")["size"] >= 2
        trusted.session.close()  # no keep-alive connection holds the server's shutdown
        default.session.close()
    finally:
        server.should_exit = True
        thread.join(10)
