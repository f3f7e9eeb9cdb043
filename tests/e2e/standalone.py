"""``airflow standalone`` with the project's DAGs and both emulators, for the tests that need a
real scheduler and API server (REST triggers, human-in-the-loop approvals).

``standalone_airflow`` starts the emulators, points the connections at them through the
environment (every Airflow component inherits it), starts standalone on a free port and waits
until its API is healthy; the Airflow log lands in ``test-artifacts/`` afterwards.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from identity_sync.emulators.serve import start_emulators
from identity_sync_airflow.standalone import admin_password, start_standalone, stop, wait_ready

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Standalone:
    base: str
    home: Path
    emulators: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str = "admin") -> str:
        if user not in self.tokens:
            resp = requests.post(f"{self.base}/auth/token", timeout=10, json={
                "username": user, "password": admin_password(self.home, user=user)})
            assert resp.status_code == 201, resp.text
            self.tokens[user] = resp.json()["access_token"]
        return self.tokens[user]

    def api(self, method: str, path: str, user: str = "admin", **kwargs: Any
            ) -> requests.Response:
        """A call to ``/api/v2`` as ``user``."""
        return requests.request(method, f"{self.base}/api/v2{path}", timeout=15,
                                headers={"Authorization": f"Bearer {self.token(user)}"},
                                **kwargs)

    def unpause(self, dag_id: str) -> None:
        wait_for(lambda: self.api("GET", f"/dags/{dag_id}").ok, 120,
                 f"the DAG processor to parse {dag_id}")
        resp = self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        assert resp.status_code == 200, resp.text

    def trigger(self, dag_id: str, run_id: str, **conf: Any) -> None:
        resp = self.api("POST", f"/dags/{dag_id}/dagRuns", json={
            "logical_date": None, "dag_run_id": run_id, "conf": conf})
        assert resp.status_code == 200, resp.text

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]

    def wait_finished(self, dag_id: str, run_id: str, timeout: float = 240) -> str:
        def finished() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in ("success", "failed") else None

        return wait_for(finished, timeout, f"run {run_id} to finish")

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        resp = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return resp.json().get("state") if resp.ok else None

    @property
    def idcs(self) -> Any:
        return self.emulators.idcs.server.config.app.state.emulator

    @property
    def bitbucket(self) -> Any:
        return self.emulators.bitbucket.server.config.app.state.emulator


@contextmanager
def standalone_airflow(tmp: Path, *, env: dict[str, str] | None = None, users: int = 120,
                       groups: int = 10, seed: int = 11, log_name: str = "standalone.log"
                       ) -> Iterator[Standalone]:
    """Emulators + ``airflow standalone``; ``env`` adds variables every component sees (rules
    file, schedule, auth manager users, ...)."""
    emulators = start_emulators(tmp / "emulators", users=users, groups=groups, seed=seed)
    connections = {**emulators.connections(),
                   "sync_audit_db": {"conn_type": "sqlite", "host": str(tmp / "audit.db")}}
    home, port = tmp / "airflow", free_port()
    with pytest.MonkeyPatch.context() as patch:
        for conn_id, conn in connections.items():
            patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        process = start_standalone(home, port)
        base = f"http://localhost:{port}"
        try:
            wait_ready(base)
            yield Standalone(base, home, emulators)
        finally:
            stop(process)
            emulators.stop()
            log = home / "standalone.log"
            artifacts = ROOT / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            if log.exists():
                (artifacts / log_name).write_text(log.read_text(errors="replace")[-200_000:])
