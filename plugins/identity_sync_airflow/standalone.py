"""``make airflow``: ``airflow standalone`` with this project's DAGs, the emulators running, the
connections pointing at them, and the pool the apply tasks use.

Prints the UI address and login, then runs until Ctrl-C. Everything lives in ``.demo/standalone``
(``--home``) and ``.demo/emulators``, so it shares the emulators' state with ``make demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from identity_sync_airflow.demo import PROJECT, set_connections

POOL = ("bitbucket_api", "4", "Bitbucket admin API calls of the identity sync")


def airflow_env(home: Path, port: int) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": os.environ.get("AIRFLOW__CORE__PARALLELISM", "4"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # The connection form's "Test" button for the idcs/bitbucket types (off by default).
        "AIRFLOW__CORE__TEST_CONNECTION": os.environ.get("AIRFLOW__CORE__TEST_CONNECTION",
                                                         "Enabled"),
    }


def admin_password(home: Path, timeout: float = 120, user: str = "admin") -> str:
    """The generated password of a simple-auth-manager user (``[core]
    simple_auth_manager_users``; only ``admin`` by default)."""
    path = home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())[user]
        except (OSError, ValueError, KeyError):  # not written yet, or half written
            time.sleep(0.5)
    raise TimeoutError(f"airflow standalone wrote no password for {user} to {path}")


def wait_ready(base_url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/api/v2/monitor/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"Airflow API at {base_url} not healthy after {timeout:.0f}s")


def start_standalone(home: Path, port: int) -> subprocess.Popen:
    """Migrate, create the pool, and start ``airflow standalone`` in its own process group."""
    env = airflow_env(home, port)
    home.mkdir(parents=True, exist_ok=True)
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*airflow, "pools", "set", *POOL], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log = (home / "standalone.log").open("w")
    return subprocess.Popen([*airflow, "standalone"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=PROJECT / ".demo")
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    from identity_sync.emulators.serve import start_emulators

    emulators = start_emulators(state_dir / "emulators")
    set_connections(emulators.connections(), state_dir / "audit.db")
    home = state_dir / "standalone"
    process = start_standalone(home, args.port)
    base = f"http://localhost:{args.port}"
    try:
        wait_ready(base)
        print(f"""Airflow is up at {base}   login: admin / {admin_password(home)}
DAGs: idcs_bitbucket_sync (unpause it or trigger it), idcs_bitbucket_login_sync (REST, see README)
IDCS emulator {emulators.idcs.base_url}, Bitbucket emulator {emulators.bitbucket.base_url}
Audit DB {state_dir / 'audit.db'}; Airflow log {home / 'standalone.log'}. Ctrl-C to stop.""",
              flush=True)
        while process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)
        emulators.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
