"""Run the sync DAG once with ``dag.test()``: ``python -m bench.dag_run --home DIR``.

A separate process so Airflow's imports and memory stay out of the pipeline measurements. The
connections come from ``AIRFLOW_CONN_*`` variables set by the harness; prints one JSON line
with the run's state and the wall time of ``dag.test()`` alone (Airflow's database migration and
DAG parsing are timed apart).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

DAG_ID = "idcs_bitbucket_sync"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--mode", default="full")
    args = parser.parse_args(argv)

    from identity_sync_airflow.demo import PROJECT, configure_airflow, migrate_metadata_db

    configure_airflow(args.home)
    t0 = time.perf_counter()
    migrate_metadata_db(args.home)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags" / f"{DAG_ID}.py"))
    if bag.import_errors:
        raise SystemExit(f"DAG import failed: {bag.import_errors}")
    dag = bag.get_dag(DAG_ID)
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    dag_run = dag.test(run_conf={"mode": args.mode})
    wall = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"run_id": dag_run.run_id, "state": str(dag_run.state), "wall": wall,
                      "setup": setup, "peak_rss_mb": rss}), flush=True)
    sys.exit(0 if str(dag_run.state) == "success" else 1)


if __name__ == "__main__":
    main()
