"""``make demo``: a real sync, end to end, on the bundled emulators and embedded defaults.

Starts both emulators on free local ports (state kept in ``.demo/``), points the Airflow
connections at them, runs the ``idcs_bitbucket_sync`` DAG in-process with ``dag.test()`` on a local
SQLite metadata database, prints what the sync did, and stops the emulators.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
DAG_ID = "idcs_bitbucket_sync"


def configure_airflow(home: Path) -> None:
    """Environment for an embedded Airflow; must run before anything imports airflow."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("DEMO_AIRFLOW_LOG_LEVEL", "ERROR"),
        "IDSYNC_SCHEDULE": "none",
    })


def migrate_metadata_db(home: Path) -> None:
    marker = home / ".migrated"
    if marker.exists():
        return
    print("Preparing Airflow's local metadata database (first run only)...", flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL)
    marker.touch()


def set_connections(connections: dict[str, dict[str, object]], audit_db: Path) -> None:
    connections = {**connections,
                   "sync_audit_db": {"conn_type": "sqlite", "host": str(audit_db)}}
    for conn_id, conn in connections.items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)


def show_progress() -> None:
    """Print the sync's own progress lines (the ``identity_sync`` loggers) plainly; Airflow's
    machinery stays at ERROR unless DEMO_AIRFLOW_LOG_LEVEL says otherwise."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(asctime)s  %(message)s", "%H:%M:%S"))
    progress = logging.getLogger("identity_sync")
    progress.setLevel(logging.INFO)
    progress.addHandler(handler)
    progress.propagate = False


def run_dag(conf: dict[str, object] | None = None) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags" / f"{DAG_ID}.py"))
    show_progress()
    if bag.import_errors:
        raise SystemExit(f"DAG import failed: {bag.import_errors}")
    return bag.get_dag(DAG_ID).test(run_conf=conf or {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=PROJECT / ".demo")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir.resolve()
    configure_airflow(state_dir / "airflow")
    migrate_metadata_db(state_dir / "airflow")

    from identity_sync import pipeline
    from identity_sync.audit.store import AuditStore
    from identity_sync.emulators.serve import start_emulators

    emulators = start_emulators(state_dir / "emulators", users=args.users, groups=args.groups)
    print(f"IDCS emulator at {emulators.idcs.base_url}, Bitbucket emulator at "
          f"{emulators.bitbucket.base_url}"
          + (f" (seeded {args.users} users, {args.groups} groups)" if emulators.seeded else
             " (state from the previous demo; `make demo-reset` starts over)"), flush=True)
    audit_db = state_dir / "audit.db"
    set_connections(emulators.connections(), audit_db)
    started = time.monotonic()
    try:
        dag_run = run_dag({"dry_run": args.dry_run})
    finally:
        emulators.stop()
    store = AuditStore(f"sqlite:///{audit_db}")
    summary = pipeline.summarise(store, dag_run.run_id)
    print()
    print(pipeline.format_summary(summary))
    print(f"  DAG run:     {dag_run.run_id} → {dag_run.state} in {time.monotonic() - started:.1f}s")
    print(f"  audit DB:    {audit_db}")
    return 0 if str(dag_run.state) == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
