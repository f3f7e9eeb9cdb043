"""The docker-compose topology as local processes: PostgreSQL (metadata and audit databases, both
created here), Redis as the Celery broker, ``airflow api-server``, ``scheduler``,
``dag-processor`` and two ``airflow celery worker`` processes, with both emulators served by
``idsync-emulators``. The sync is triggered through the REST API (``deploy/trigger_sync.py``, the
script the compose demo uses); the test then checks that mapped apply tasks ran on both workers,
the audit rows in PostgreSQL and the Bitbucket emulator's final state.

Logs of every component go to ``test-artifacts/distributed/``; run duration and tasks per worker
to ``test-artifacts/distributed/summary.json`` (measured and recorded, never asserted)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import requests
import yaml

from identity_sync.emulators.bitbucket import DEMO_ADMIN_PASSWORD, DEMO_ADMIN_USER
from identity_sync.emulators.idcs import DEMO_APP_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from identity_sync_airflow.tasks import BITBUCKET_POOL, BITBUCKET_POOL_SLOTS, SYNC_DAG_ID
from tests.conftest import require_service
from tests.e2e.conftest import Live
from tests.e2e.test_sync_dag import actual_state, expected_state

from .topology import Processes, free_port, wait_for
from .worker_identity import WORKER_NAME_ENV

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "distributed"
PG_USER = os.environ.get("IDSYNC_TEST_PG_USER", "postgres")
PG_ADMIN = f"host=127.0.0.1 port=5432 user={PG_USER} dbname=postgres"
REDIS_DB = 11  # a dedicated Redis database; the queue name below is unique per run as well
WORKERS = ("worker-a", "worker-b")
WORKER_CONCURRENCY = 2
ADMIN_PASSWORD = "distributed-test-admin"
# A generated organisation (133 users to create) and a batch size that give the users phase
# several mapped apply tasks, more than one worker's slots, and the groups phase two batches that
# run at once (this test found group permissions racing their groups' creation at this size).
ORG = {"DEMO_USERS": "300", "DEMO_GROUPS": "30", "DEMO_SEED": "42"}
BATCH_SIZE = 20


@dataclass
class Stack:
    base_url: str
    idcs_url: str
    bitbucket_url: str
    audit_url: str
    processes: Processes
    started_at: float
    ready_after: float = 0.0


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def _rules_copy(path: Path) -> Path:
    """The bundled rules with a small apply batch size: several mapped tasks per phase."""
    rules = yaml.safe_load((ROOT / "include" / "sync_rules.yaml").read_text())
    rules.setdefault("apply", {})["batch_size"] = BATCH_SIZE
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def _airflow_env(home: Path, meta_db: str, audit_db: str, api_port: int, queue: str,
                 idcs_url: str, bitbucket_url: str, rules: Path) -> dict[str, str]:
    """What the compose file's ``x-airflow-common`` environment sets, for local processes."""
    venv_bin = str(Path(sys.executable).parent)
    meta = f"postgresql+psycopg://{PG_USER}@127.0.0.1:5432/{meta_db}"
    base = f"http://127.0.0.1:{api_port}"
    connections = {
        "idcs_default": {"conn_type": "idcs", "host": idcs_url, "login": DEMO_CLIENT_ID,
                         "password": DEMO_CLIENT_SECRET, "extra": {"app_id": DEMO_APP_ID}},
        "bitbucket_default": {"conn_type": "bitbucket", "host": bitbucket_url,
                              "login": DEMO_ADMIN_USER, "password": DEMO_ADMIN_PASSWORD},
        "sync_audit_db": {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432,
                          "login": PG_USER, "schema": audit_db},
    }
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update({
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, ROOT / "include", ROOT / "plugins")),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AIRFLOW__CORE__AUTH_MANAGER": ("airflow.api_fastapi.auth.managers.simple."
                                        "simple_auth_manager.SimpleAuthManager"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
        # Airflow would derive an asyncpg URL, and asyncpg is not in the lock: psycopg 3 does both.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": meta.replace("+psycopg:", "+psycopg_async:"),
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{meta}",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "IDSYNC_SCHEDULE": "none",  # unpausing must not add a scheduled run next to ours
        "IDSYNC_RULES_FILE": str(rules),
        "IDSYNC_RETRY_DELAY_SECONDS": "1",
        **{f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in connections.items()},
    })
    return env


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    started_at = time.monotonic()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    suffix = uuid.uuid4().hex[:8]
    meta_db, audit_db, queue = f"idsync_dist_meta_{suffix}", f"idsync_dist_audit_{suffix}", \
        f"idsync-dist-{suffix}"
    processes = Processes(ARTIFACTS)
    created: list[str] = []
    home = tmp_path / "airflow"
    try:
        for name in (meta_db, audit_db):
            _pg(f'CREATE DATABASE "{name}"')
            created.append(name)
        idcs_port, bitbucket_port, api_port = free_port(), free_port(), free_port()
        processes.start("emulators", [str(Path(sys.executable).parent / "idsync-emulators")], {
            **os.environ, **ORG, "EMULATOR_HOST": "127.0.0.1",
            "IDCS_EMULATOR_PORT": str(idcs_port), "BITBUCKET_EMULATOR_PORT": str(bitbucket_port),
            "EMULATOR_STATE_DIR": str(tmp_path / "emulators")})
        idcs_url, bitbucket_url = f"http://127.0.0.1:{idcs_port}", \
            f"http://127.0.0.1:{bitbucket_port}"
        env = _airflow_env(home, meta_db, audit_db, api_port, queue, idcs_url, bitbucket_url,
                           _rules_copy(tmp_path / "sync_rules.yaml"))
        home.mkdir()
        (home / "passwords.json").write_text(json.dumps({"admin": ADMIN_PASSWORD}))
        airflow = [sys.executable, "-m", "airflow"]
        with (ARTIFACTS / "init.log").open("w") as log:
            subprocess.run([*airflow, "db", "migrate"], env=env, check=True, stdout=log,
                           stderr=subprocess.STDOUT)
        # What airflow-init does next; run while the components start (it only needs the DB).
        pool = processes.start("init-pool", [*airflow, "pools", "set", BITBUCKET_POOL,
                                             str(BITBUCKET_POOL_SLOTS), "sync"], env)
        processes.start("api-server", [*airflow, "api-server"], env)
        processes.start("scheduler", [*airflow, "scheduler"], env)
        processes.start("dag-processor", [*airflow, "dag-processor"], env)
        for name in WORKERS:
            processes.start(name, [*airflow, "celery", "worker", "-H", f"{name}@localhost",
                                   "-c", str(WORKER_CONCURRENCY), "-q", queue,
                                   "--skip-serve-logs", "--without-mingle", "--without-gossip"],
                            {**env, WORKER_NAME_ENV: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE":
                             "tests.deploy.worker_identity.worker_name"})
        base = f"http://127.0.0.1:{api_port}"
        alive = partial(processes.check_alive, expected_to_exit=("init-pool", "trigger"))
        wait_for(lambda: requests.get(f"{base}/api/v2/monitor/health", timeout=5).ok, 180,
                 "the API server", alive)
        assert pool.wait(120) == 0, (ARTIFACTS / "init-pool.log").read_text()
        wait_for(lambda: requests.get(f"{idcs_url}/_emulator/state", timeout=5).ok, 60,
                 "the emulators", alive)
        yield Stack(base, idcs_url, bitbucket_url,
                    f"postgresql+psycopg://{PG_USER}@127.0.0.1:5432/{audit_db}", processes,
                    started_at, time.monotonic() - started_at)
    finally:
        processes.stop_all()
        if (home / "logs").exists():
            shutil.copytree(home / "logs", ARTIFACTS / "task-logs", dirs_exist_ok=True)
        for name in created:
            _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _forget_queue(queue)


def _forget_queue(queue: str) -> None:
    """Remove this run's Celery queue from the shared Redis database."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    keys = list(client.scan_iter(f"*{queue}*"))
    if keys:
        client.delete(*keys)


def test_sync_runs_distributed_over_two_celery_workers(stack: Stack) -> None:
    run_id = f"distributed__{uuid.uuid4().hex[:8]}"
    trigger = stack.processes.start("trigger", [
        sys.executable, str(ROOT / "deploy" / "trigger_sync.py"), "--base-url", stack.base_url,
        "--username", "admin", "--password", ADMIN_PASSWORD, "--dag-id", SYNC_DAG_ID,
        "--run-id", run_id, "--wait", "--timeout", "300"], os.environ.copy())

    wait_for(lambda: trigger.poll() is not None, 330, "the sync run to finish",
             partial(stack.processes.check_alive, expected_to_exit=("init-pool", "trigger")))
    output = (ARTIFACTS / "trigger.log").read_text()
    result = json.loads(output.strip().splitlines()[-1])
    assert result["state"] == "success", output

    token = requests.post(f"{stack.base_url}/auth/token", timeout=10,
                          json={"username": "admin", "password": ADMIN_PASSWORD}).json()
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    listing = requests.get(
        f"{stack.base_url}/api/v2/dags/{SYNC_DAG_ID}/dagRuns/{run_id}/taskInstances",
        params={"limit": 1000}, headers=auth, timeout=30).json()
    instances = listing["task_instances"]
    assert instances and listing["total_entries"] == len(instances)
    ran = [ti for ti in instances if ti["state"] == "success"]
    applied = [ti for ti in ran if ti["task_id"].startswith("apply_") and ti["map_index"] >= 0]
    per_worker = Counter(ti["hostname"] for ti in ran)
    apply_per_worker = Counter(ti["hostname"] for ti in applied)
    (ARTIFACTS / "task_instances.json").write_text(json.dumps(instances, indent=1))

    # Audit rows in the PostgreSQL audit database.
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.audit_url)
    with engine.connect() as conn:
        run_row = conn.execute(text("select status, mode from sync_runs where run_id = :r"),
                               {"r": run_id}).one()
        statuses = dict(conn.execute(text(
            "select status, count(*) from plan_operations where run_id = :r group by status"),
            {"r": run_id}).all())
        done_attempts = conn.execute(text(
            "select count(distinct op_id) from operation_attempts where run_id = :r and "
            "outcome = 'done'"), {"r": run_id}).scalar_one()
        anchors = conn.execute(text("select count(*) from identity_anchors")).scalar_one()
    engine.dispose()

    # The Bitbucket emulator's final state against what the rules want from the IDCS data.
    idcs_dump = requests.get(f"{stack.idcs_url}/_emulator/state", timeout=30).json()
    want_users, want_members = expected_state(idcs_dump)
    got_users, got_members = actual_state(Live(stack.idcs_url, stack.bitbucket_url, None, ""))

    summary = {
        "dag_id": SYNC_DAG_ID, "dag_run_id": run_id, "state": result["state"],
        "trigger_to_finish_seconds": result["seconds"],
        "stack_ready_seconds": round(stack.ready_after, 1),
        "total_wall_seconds": round(time.monotonic() - stack.started_at, 1),
        "workers": list(WORKERS), "worker_concurrency": WORKER_CONCURRENCY,
        "tasks_per_worker": dict(per_worker), "mapped_apply_tasks_per_worker":
            dict(apply_per_worker),
        "mapped_apply_tasks": len(applied), "plan_operations": statuses,
        "users_created": len(want_users),
    }
    (ARTIFACTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\ndistributed sync: {json.dumps(summary)}")

    assert set(per_worker) == set(WORKERS), per_worker
    # One phase had more mapped batches than a worker has slots, so sharing was possible.
    busiest = Counter(ti["task_id"] for ti in applied).most_common(1)[0]
    assert busiest[1] > WORKER_CONCURRENCY, busiest
    assert set(apply_per_worker) == set(WORKERS), apply_per_worker
    assert run_row.status == "succeeded"
    assert set(statuses) == {"done"} and statuses["done"] == done_attempts
    assert anchors == len(want_users)
    assert {n: got_users.get(n) for n in want_users} == want_users
    for group, members in want_members.items():
        assert got_members.get(group) == members, group
