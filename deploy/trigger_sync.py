"""Trigger a DAG run through Airflow's REST API and (optionally) wait for it to finish.

Used by the compose ``demo`` profile (``demo-sync`` service: unpause and run the sync once the
stack is up) and by ``tests/deploy/test_distributed.py``. Standard library only, so it runs in the
Airflow image or on any host with Python 3.

    python deploy/trigger_sync.py --base-url http://localhost:8080 --username admin \
        --password "$AIRFLOW_ADMIN_PASSWORD" --dag-id idcs_bitbucket_sync --wait

Prints one JSON object: ``{"dag_id", "dag_run_id", "state", "seconds"}``; exits 0 only when the
run succeeded (or was just triggered, without ``--wait``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DEFAULT_DAG_ID = "idcs_bitbucket_sync"


class Api:
    """The few REST calls a trigger needs, with a bearer token from ``/auth/token``."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = self.call("POST", "/auth/token",
                               {"username": username, "password": password})["access_token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, headers=headers,
                                         method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload else None


def wait_until(check: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; connection errors count as 'not yet'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            result = None
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def trigger(api: Api, dag_id: str, run_id: str, conf: dict[str, Any], parse_timeout: float
            ) -> None:
    """Wait until the DAG is parsed, unpause it (new DAGs start paused), trigger one run."""

    def parsed() -> bool:
        try:
            return bool(api.call("GET", f"/api/v2/dags/{dag_id}"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    wait_until(parsed, parse_timeout, f"the DAG processor to parse {dag_id}")
    api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns",
             {"logical_date": None, "dag_run_id": run_id, "conf": conf})


def run_state(api: Api, dag_id: str, run_id: str) -> str:
    return api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=env("AIRFLOW_API_URL", "http://localhost:8080"))
    parser.add_argument("--username", default=env("AIRFLOW_ADMIN_USERNAME", "admin"))
    parser.add_argument("--password", default=env("AIRFLOW_ADMIN_PASSWORD"))
    parser.add_argument("--dag-id", default=DEFAULT_DAG_ID)
    parser.add_argument("--run-id", default=None, help="default: manual__deploy_<unix time>")
    parser.add_argument("--conf", default="{}", help="JSON object passed as the run's conf")
    parser.add_argument("--wait", action="store_true", help="wait for success or failure")
    parser.add_argument("--timeout", type=float, default=600, help="seconds, for each wait")
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("--password (or AIRFLOW_ADMIN_PASSWORD) is required")

    api = wait_until(lambda: Api(args.base_url, args.username, args.password), args.timeout,
                     f"the Airflow API at {args.base_url}", interval=2)
    run_id = args.run_id or f"manual__deploy_{int(time.time())}"
    started = time.monotonic()
    trigger(api, args.dag_id, run_id, json.loads(args.conf), args.timeout)
    state = "queued"
    if args.wait:
        state = wait_until(
            lambda: (s := run_state(api, args.dag_id, run_id)) in ("success", "failed") and s,
            args.timeout, f"run {run_id} to finish")
    print(json.dumps({"dag_id": args.dag_id, "dag_run_id": run_id, "state": state,
                      "seconds": round(time.monotonic() - started, 1)}), flush=True)
    return 1 if state == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
