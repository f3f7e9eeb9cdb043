"""``docker-compose.yaml`` validated by a real Compose implementation (Debian's ``docker-compose``
1.29, ``config``), then checked against the project: services and commands, image, executor,
secrets, mounts, the connections the hooks read, the pool the apply tasks use, the DAG the demo
triggers, every variable documented in ``.env.example``, and a Dockerfile that installs uv.lock.
No Docker engine is needed."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from identity_sync.emulators.bitbucket import DEMO_ADMIN_PASSWORD, DEMO_ADMIN_USER
from identity_sync.emulators.idcs import DEMO_APP_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from identity_sync_airflow.hooks import AuditStoreHook, BitbucketHook, IdcsHook
from identity_sync_airflow.tasks import BITBUCKET_POOL, SYNC_DAG_ID
from tests.conftest import require_command, require_service

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
AIRFLOW_SERVICES = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                    "airflow-worker": "celery worker"}
DEMO_SERVICES = {"emulators", "demo-sync"}
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")  # $${X} is the container's


def command_line(service: dict[str, Any]) -> str:
    command = service["command"]
    return " ".join(command) if isinstance(command, list) else command


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def compose_config(env_path: Path) -> subprocess.CompletedProcess:
    """``docker-compose config`` on the project's file, reading variables only from ``env_path``."""
    return subprocess.run(
        [require_command("docker-compose", "docker-compose"), "--env-file", str(env_path), "--profile", "demo",
         "-f", str(COMPOSE_FILE), "config"],
        capture_output=True, text=True, cwd=ROOT, env={"PATH": os.environ["PATH"]}, timeout=120,
        check=False)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_the_topology_of_the_official_file_plus_the_demo_profile(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) >= {"postgres", "redis", "airflow-init", *AIRFLOW_SERVICES, *DEMO_SERVICES}
    for name in DEMO_SERVICES:
        assert services[name]["profiles"] == ["demo"]
    for name, service in services.items():
        if name not in {"airflow-init", "demo-sync", "airflow-cli"}:
            assert "healthcheck" in service, f"{name} has no health check"
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
    # Scalable with --scale: no fixed name, no host port.
    worker = services["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"


def test_airflow_services_share_image_executor_and_secrets(config: dict[str, Any]) -> None:
    services = config["services"]
    example = env_file(ENV_EXAMPLE)
    airflow = {name: services[name] for name in [*AIRFLOW_SERVICES, "airflow-init"]}
    for name, command in AIRFLOW_SERVICES.items():
        assert command_line(services[name]) == command, name
    images = {s["image"] for s in [*airflow.values(), services["emulators"],
                                   services["demo-sync"]]}
    assert images == {example["AIRFLOW_IMAGE_NAME"]}
    assert {s["build"]["context"] for s in airflow.values()} == {str(ROOT)}
    for name, service in airflow.items():
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__FERNET_KEY"] == example["AIRFLOW_FERNET_KEY"], name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == example["AIRFLOW_JWT_SECRET"], name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == \
            f"db+{env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == \
            "http://airflow-apiserver:8080/execution/", name
        assert "/opt/airflow/include" in env["PYTHONPATH"].split(":"), name
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        for folder in ("dags", "plugins", "include", "logs", "config"):
            assert mounts[f"/opt/airflow/{folder}"] == str(ROOT / folder), (name, folder)
    assert services["postgres"]["environment"]["AUDIT_DB_NAME"] != \
        services["postgres"]["environment"]["POSTGRES_DB"], "audit rows need their own database"


def test_service_commands_are_airflow_commands(config: dict[str, Any]) -> None:
    """Each service's command is a command of this Airflow and its Celery provider."""
    from airflow.cli import cli_config
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor

    commands = {c.name for c in cli_config.core_commands}
    commands |= {f"{group.name} {sub.name}" for group in CeleryExecutor.get_cli_commands()
                 for sub in group.subcommands}
    for command in AIRFLOW_SERVICES.values():
        assert command in commands, command
    for script in ("airflow-init.sh", "airflow-setup.sh", "postgres/init-audit-db.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "deploy" / script)], check=True)
    init = config["services"]["airflow-init"]
    assert init["command"] == ["/opt/airflow/deploy/airflow-init.sh"]
    assert (ROOT / "deploy" / "airflow-init.sh").stat().st_mode & 0o111
    assert "idsync-emulators" in " ".join(config["services"]["emulators"]["command"])


def test_connections_pool_and_dag_agree_with_the_project(config: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    services = config["services"]
    init_env = services["airflow-init"]["environment"]
    # The pool the apply tasks are assigned to, created by airflow-setup.sh.
    assert init_env["BITBUCKET_POOL"] == BITBUCKET_POOL
    connections = load_script("connections").connections(init_env)
    hooks = (IdcsHook, BitbucketHook, AuditStoreHook)
    assert set(connections) == {hook.default_conn_name for hook in hooks}
    for conn_id, fields in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    # The hooks read them as the DAG's tasks will: the audit DB is the postgres service's second
    # database, the same one `idsync-audit` is pointed at.
    audit_url = AuditStoreHook().sqlalchemy_url()
    assert audit_url == services["airflow-scheduler"]["environment"]["IDSYNC_AUDIT_DB"]
    assert f"@postgres:5432/{services['postgres']['environment']['AUDIT_DB_NAME']}" in audit_url
    idcs = IdcsHook()
    client = idcs.get_conn()
    bitbucket = BitbucketHook().get_conn()
    # .env.example's defaults are the demo profile's emulators with their demo credentials.
    emulators = services["emulators"]["environment"]
    assert idcs.app_id == DEMO_APP_ID
    assert connections["idcs_default"]["host"] == \
        f"http://emulators:{emulators['IDCS_EMULATOR_PORT']}"
    assert connections["bitbucket_default"]["host"] == \
        f"http://emulators:{emulators['BITBUCKET_EMULATOR_PORT']}"
    assert (connections["idcs_default"]["login"], connections["idcs_default"]["password"]) == \
        (DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
    assert bitbucket.username == DEMO_ADMIN_USER
    assert connections["bitbucket_default"]["password"] == DEMO_ADMIN_PASSWORD
    assert client is not None

    # The DAG the demo triggers is the project's main DAG, and it is a file in dags/.
    trigger = load_script("trigger_sync")
    assert trigger.DEFAULT_DAG_ID == SYNC_DAG_ID
    assert (ROOT / "dags" / f"{SYNC_DAG_ID}.py").exists()
    assert services["demo-sync"]["environment"]["AIRFLOW_API_URL"] == \
        "http://airflow-apiserver:8080"


def test_airflow_setup_creates_pool_connections_and_audit_schema(
        config: dict[str, Any], airflow_db: Path, tmp_path: Path) -> None:
    """deploy/airflow-setup.sh, run as it is with airflow-init's rendered environment (the
    metadata DB is this session's SQLite, the audit DB a fresh SQLite file)."""
    from cryptography.fernet import Fernet
    from sqlalchemy import create_engine, inspect, text

    init_env = {k: str(v) for k, v in config["services"]["airflow-init"]["environment"].items()
                if not k.startswith(("AIRFLOW", "IDSYNC_", "PYTHONPATH"))}
    fernet_key = Fernet.generate_key().decode()  # as AIRFLOW_FERNET_KEY is in the compose stack
    audit_db = tmp_path / "audit.db"
    venv_bin = str(Path(sys.executable).parent)
    setup = subprocess.run(
        ["bash", str(ROOT / "deploy" / "airflow-setup.sh")], capture_output=True, text=True,
        env={**os.environ, **init_env, "AIRFLOW__CORE__FERNET_KEY": fernet_key,
             "IDSYNC_AUDIT_DB": str(audit_db), "PATH": f"{venv_bin}:{os.environ['PATH']}"},
        check=False)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert "connections to import: idcs_default, bitbucket_default, sync_audit_db" in setup.stdout

    engine = create_engine(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    with engine.connect() as conn:
        slots = conn.execute(text("select slots from slot_pool where pool = :p"),
                             {"p": BITBUCKET_POOL}).scalar_one()
        stored = {row.conn_id: row for row in conn.execute(text(
            "select conn_id, conn_type, host, schema, extra, is_encrypted, is_extra_encrypted "
            "from connection"))}
    engine.dispose()
    assert slots == int(init_env["BITBUCKET_POOL_SLOTS"])
    assert stored["sync_audit_db"].schema == init_env["AUDIT_DB_NAME"]
    assert stored["sync_audit_db"].host == "postgres"
    assert stored["idcs_default"].conn_type == "idcs"
    assert stored["idcs_default"].host == init_env["IDCS_URL"]
    assert stored["bitbucket_default"].host == init_env["BITBUCKET_URL"]
    # Secrets are stored encrypted with the Fernet key.
    assert stored["idcs_default"].is_encrypted and stored["idcs_default"].is_extra_encrypted
    extra = Fernet(fernet_key.encode()).decrypt(stored["idcs_default"].extra.encode()).decode()
    assert json.loads(extra)["app_id"] == init_env["IDCS_APP_ID"] == DEMO_APP_ID

    audit = create_engine(f"sqlite:///{audit_db}")
    assert {"sync_runs", "plan_operations", "idsync_audit_version"} <= set(
        inspect(audit).get_table_names())
    audit.dispose()


def test_every_variable_is_documented_and_secrets_are_required(tmp_path: Path) -> None:
    used = set(VARIABLE.findall(COMPOSE_FILE.read_text()))
    documented = set(env_file(ENV_EXAMPLE))
    assert used - documented == set(), "variables the compose file reads but .env.example lacks"
    assert documented - used == set(), ".env.example documents variables nothing reads"
    # Without a .env, Compose refuses to start rather than run with default secrets.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = compose_config(empty)
    assert refused.returncode != 0
    assert "set " in refused.stderr and "in .env" in refused.stderr


def test_new_env_writes_fresh_secrets_that_compose_accepts(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    new_env = load_script("new_env")
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    for path in (first, second):
        assert new_env.main(["--output", str(path)]) == 0
    a, b = env_file(first), env_file(second)
    assert set(a) == set(env_file(ENV_EXAMPLE))
    for name in new_env.GENERATED:
        if name != "AIRFLOW_UID":
            assert a[name] != b[name] and a[name] != env_file(ENV_EXAMPLE)[name], name
    Fernet(a["AIRFLOW_FERNET_KEY"].encode())  # raises on a malformed key
    assert new_env.main(["--output", str(first)]) == 1  # never overwrites secrets
    rendered = compose_config(first)
    assert rendered.returncode == 0, rendered.stderr
    env = yaml.safe_load(rendered.stdout)["services"]["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__FERNET_KEY"] == a["AIRFLOW_FERNET_KEY"]


def test_dockerfile_installs_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.M))
    lock = (ROOT / "uv.lock").read_text()
    locked_airflow = re.search(r'name = "apache-airflow"\nversion = "([^"]+)"', lock).group(1)
    assert args["AIRFLOW_VERSION"] == locked_airflow
    assert args["AIRFLOW_BASE_IMAGE"].startswith("apache/airflow:")
    assert "${AIRFLOW_VERSION}-python${PYTHON_VERSION}" in args["AIRFLOW_BASE_IMAGE"]
    assert args["PYTHON_VERSION"] in {"3.11", "3.12"}
    makefile = (ROOT / "Makefile").read_text()
    assert args["UV_VERSION"] == re.search(r"^UV_VERSION := (\S+)", makefile, re.M).group(1)
    assert re.search(r"^COPY .*\buv\.lock\b", dockerfile, re.M)
    assert re.search(r"pip install [^\n]*--no-deps --require-hashes -r", dockerfile)

    # Run the Dockerfile's own export command on the lock: every runtime package pinned with
    # hashes, Airflow and the Celery provider included, no dev tools.
    export = re.search(r"uv (export [^\n]*?)\\\n\s+(--output-file) \S+", dockerfile)
    uv = ROOT / ".tools" / "bin" / "uv"
    assert uv.exists(), "make creates .tools/bin/uv"
    out = ROOT / "test-artifacts" / f"requirements-{uuid.uuid4().hex[:6]}.txt"
    out.parent.mkdir(exist_ok=True)
    try:
        subprocess.run([str(uv), *export.group(1).split(), export.group(2), str(out)], cwd=ROOT,
                       check=True, capture_output=True)
        requirements = out.read_text()
    finally:
        out.unlink(missing_ok=True)
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", requirements, re.M))
    assert pins["apache-airflow"] == locked_airflow
    assert "apache-airflow-providers-celery" in pins and "psycopg" in pins
    assert "pytest" not in pins and "ruff" not in pins
    blocks = re.split(r"^(?=[A-Za-z0-9])", requirements, flags=re.M)
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)

    # What the Dockerfile copies is in the build context (.dockerignore keeps local state out).
    ignored = [p for p in (ROOT / ".dockerignore").read_text().splitlines()
               if p and not p.startswith(("#", "!"))]
    for source in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
            assert not any(fnmatch.fnmatch(path, pattern) for pattern in ignored), path
    for local_state in (".venv", ".env", ".demo", ".tools", ".git"):
        assert any(fnmatch.fnmatch(local_state, pattern) for pattern in ignored), local_state


def test_postgres_init_script_creates_the_audit_database() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_command("psql", "postgresql-client")
    import psycopg

    user = os.environ.get("IDSYNC_TEST_PG_USER", "postgres")
    name = f"idsync_compose_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": "5432", "POSTGRES_USER": user,
           "POSTGRES_DB": "postgres", "AUDIT_DB_NAME": name, "AUDIT_DB_USER": name,
           "AUDIT_DB_PASSWORD": "it's a test"}
    admin = f"host=127.0.0.1 port=5432 user={user} dbname=postgres"
    try:
        subprocess.run(["bash", str(ROOT / "deploy" / "postgres" / "init-audit-db.sh")], env=env,
                       check=True, capture_output=True)
        with psycopg.connect(admin) as conn:
            owner = conn.execute("select pg_get_userbyid(datdba) from pg_database where "
                                 "datname = %s", (name,)).fetchone()
        assert owner == (name,)
        with psycopg.connect(f"host=127.0.0.1 port=5432 user={name} dbname={name}") as conn:
            assert conn.execute("select current_database()").fetchone() == (name,)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{name}"')
