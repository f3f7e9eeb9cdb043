"""``airflow standalone`` with the project's DAGs: trigger the on-login DAG through the REST API,
exactly as the README documents it, and wait for success. Records the trigger-to-success time in
``test-artifacts/login_latency.json`` (measured, never asserted)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .standalone import ROOT, standalone_airflow, wait_for
from .test_sync_dag import expected_state

pytestmark = pytest.mark.e2e
LOGIN = "idcs_bitbucket_login_sync"


@pytest.fixture
def airflow_api(tmp_path: Path) -> Iterator[tuple[str, str, object]]:
    with standalone_airflow(tmp_path) as airflow:
        yield airflow.base, airflow.token(), airflow.emulators


def test_on_login_dag_triggered_through_the_rest_api(airflow_api) -> None:
    base, token, emulators = airflow_api
    auth = {"Authorization": f"Bearer {token}"}
    idcs_state = emulators.idcs.server.config.app.state.emulator.to_dict()
    username = sorted(expected_state(idcs_state)[0])[0]

    wait_for(lambda: requests.get(f"{base}/api/v2/dags/{LOGIN}", headers=auth, timeout=5).ok,
             120, "the DAG processor to parse the on-login DAG")
    unpaused = requests.patch(f"{base}/api/v2/dags/{LOGIN}", headers=auth,
                              json={"is_paused": False}, timeout=10)
    assert unpaused.status_code == 200, unpaused.text

    started = time.monotonic()
    trigger = requests.post(f"{base}/api/v2/dags/{LOGIN}/dagRuns", headers=auth, timeout=10,
                            json={"logical_date": None, "dag_run_id": f"login__{username}",
                                  "conf": {"username": username}})
    assert trigger.status_code == 200, trigger.text

    def finished() -> str | None:
        run = requests.get(f"{base}/api/v2/dags/{LOGIN}/dagRuns/login__{username}",
                           headers=auth, timeout=10).json()
        return run["state"] if run["state"] in ("success", "failed") else None

    state = wait_for(finished, 240, "the on-login run to finish")
    latency = time.monotonic() - started
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "login_latency.json").write_text(json.dumps(
        {"trigger_to_success_seconds": round(latency, 2), "state": state}))
    print(f"on-login sync: trigger → {state} in {latency:.1f}s")
    assert state == "success"
    bitbucket = emulators.bitbucket.server.config.app.state.emulator.to_dict()
    assert username in {u["name"] for u in bitbucket["users"]}
