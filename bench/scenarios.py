"""The scenarios and the sequence of runs each one makes.

Per scenario: a cold initial sync into an empty Bitbucket, a no-op full re-sync, an incremental
run after 100 IDCS changes, and one on-login single-user sync; optionally the cold initial sync
once more through Airflow's ``dag.test()`` (on a fresh Bitbucket and audit store).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identity_sync.emulators.idcs import DEMO_APP_ID
from identity_sync.subset import Subset

from .emulators import PROJECT, EmulatorPair, start_pair
from .minimum import Limits, bound_seconds
from .runner import (
    LOGIN_DAG_ID,
    PipelineBench,
    RunRecord,
    compute_minimum,
    load_average,
    warm_up,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    name: str
    users: int
    groups: int
    memberships: int
    rate_limit: bool = False  # Bitbucket's limiter on (capacity 60, 5 per second)
    changes: int = 100  # IDCS changes before the incremental run
    dag: bool = False  # also run the cold sync once through dag.test()


SCENARIOS = {
    "S": Scenario("S", 1_000, 100, 10_000),
    "S-rl": Scenario("S-rl", 1_000, 100, 10_000, rate_limit=True),
    "M": Scenario("M", 10_000, 1_000, 200_000, dag=True),
    "L": Scenario("L", 100_000, 5_000, 1_000_000),
}
RATE_CAPACITY, RATE_FILL = 60, 5


@dataclass(frozen=True)
class Settings:
    latency: float = 0.02
    connections: int = 8
    apply_workers: int = 4
    seed: int = 1
    dag: bool = True  # honour Scenario.dag
    runs: tuple[str, ...] = ("initial", "noop", "incremental", "login")


def run_scenario(scenario: Scenario, settings: Settings) -> list[RunRecord]:
    """Start seeded emulators, make the scenario's runs, stop the emulators."""
    log.info("scenario %s: seeding %d users, %d groups, ~%d memberships", scenario.name,
             scenario.users, scenario.groups, scenario.memberships)
    t0 = time.perf_counter()
    warmed: list[float] = []
    pair = start_pair(scenario.users, scenario.groups, scenario.memberships, settings.seed,
                      meanwhile=lambda: warmed.append(warm_up()))
    imports = warmed[0]
    log.info("scenario %s: emulators up and imports warm in %.1fs", scenario.name,
             time.perf_counter() - t0)
    try:
        limits = _configure(pair, scenario, settings)
        with tempfile.TemporaryDirectory(prefix=f"bench-{scenario.name}-") as tmp:
            bench = PipelineBench(scenario.name, pair, f"sqlite:///{Path(tmp) / 'audit.db'}",
                                  limits=limits, apply_workers=settings.apply_workers)
            bench.changes = scenario.changes
            records = _pipeline_runs(bench, pair, settings, limits)
            if imports > 1 and records:
                records[0].notes.append(f"one-off imports before the first run (Great "
                                        f"Expectations): {imports:.1f}s, not in the wall time")
            if scenario.dag and settings.dag:
                records.append(dag_initial_run(scenario, pair, settings, limits, Path(tmp)))
            bench.store.dispose()
        return records
    finally:
        pair.stop()


def _configure(pair: EmulatorPair, scenario: Scenario, settings: Settings) -> Limits:
    for emulator in (pair.idcs, pair.bitbucket):
        emulator.set_latency(settings.latency)
    if scenario.rate_limit:
        pair.bitbucket.control("PUT", "rate-limit", json={"enabled": True,
                                                           "capacity": RATE_CAPACITY,
                                                           "fillRate": RATE_FILL})
        return Limits(settings.latency, settings.connections, RATE_CAPACITY, RATE_FILL)
    return Limits(settings.latency, settings.connections)


def _pipeline_runs(bench: PipelineBench, pair: EmulatorPair, settings: Settings,
                   limits: Limits) -> list[RunRecord]:
    records = []
    for n, run in enumerate(settings.runs):
        if n and limits.rate_fill:
            # Scheduled runs are minutes apart: let Bitbucket's bucket fill up again, or the
            # next run would start its burst into the one the last run just spent.
            time.sleep((limits.rate_capacity or 0) / limits.rate_fill)
        log.info("  %s: %s", bench.scenario, run)
        if run == "initial":
            record = bench.sync("initial", mode="full")
        elif run == "noop":
            record = bench.sync("noop", mode="full")
        elif run == "incremental":
            changes = pair.idcs.control("POST", "bench/changes", json={
                "app_id": DEMO_APP_ID, "total": bench.changes})
            changed = sum(changes["counts"].values())
            record = bench.sync("incremental", mode="incremental", changed=changed)
            record.notes.append("changes: " + ", ".join(
                f"{n} {k}" for k, n in changes["counts"].items()))
        elif run == "login":
            user = pair.idcs.control("POST", "bench/user", json={"app_id": DEMO_APP_ID,
                                                                  "seed": settings.seed})
            record = bench.sync("login", mode="user", dag_id=LOGIN_DAG_ID,
                                subset=Subset(users=(user["userName"],)))
            record.notes.append(f"new user {user['userName']} in 2 granted groups")
        else:
            raise ValueError(f"unknown run {run!r}")
        log.info("  %s: %s %s in %.1fs, %d requests", bench.scenario, run, record.status,
                 record.wall, record.total_requests)
        records.append(record)
    return records


def dag_initial_run(scenario: Scenario, pair: EmulatorPair, settings: Settings,
                    limits: Limits, tmp: Path) -> RunRecord:
    """The cold initial sync through ``dag.test()`` in a subprocess, on a reset Bitbucket and a
    fresh audit store; requests and minimum are measured exactly as for the pipeline runs."""
    log.info("  %s: initial sync through dag.test()", scenario.name)
    bitbucket, idcs = pair.bitbucket, pair.idcs
    bitbucket.control("POST", "reset")  # a new instance; this also clears faults and limits
    _configure(pair, scenario, settings)
    idcs.reset_counters()
    bitbucket.reset_counters()
    bitbucket.control("POST", "bench/mark")
    before = bitbucket.control("GET", "bench/summary")["sizes"]
    idcs_data = idcs.control("GET", "bench/summary", params={"app_id": DEMO_APP_ID})
    audit = tmp / "dag-audit.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(PROJECT / p) for p in ("include", "plugins", "dags", "."))}
    for conn_id, conn in {**pair.connections(), "sync_audit_db": {
            "conn_type": "sqlite", "host": str(audit)}}.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    record = RunRecord(scenario.name, "initial", "dag.test()", time.strftime("%Y%m%dT%H%M%S"),
                       load=load_average())
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.dag_run", "--home",
                           str(tmp / "airflow")], cwd=PROJECT, env=env, capture_output=True,
                          text=True, check=False)
    total = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    record.wall = float(result.get("wall", total))
    record.status = result.get("state", f"exit {proc.returncode}")
    record.peak_rss_mb = float(result.get("peak_rss_mb", 0.0))
    record.stages = {"airflow setup (migrate, parse)": float(result.get("setup", 0.0)),
                     "dag.test()": record.wall}
    record.notes.append(f"subprocess total {total:.1f}s incl. interpreter and Airflow start-up")
    if proc.returncode != 0:
        record.message = (proc.stderr or proc.stdout)[-2000:]
    record.calls = {"idcs": idcs.calls(), "bitbucket": bitbucket.calls()}
    record.requests = {k: sum(v.values()) for k, v in record.calls.items()}
    record.responses = {"idcs": idcs.responses().get("responses", {}),
                        "bitbucket": bitbucket.responses().get("responses", {})}
    record.bitbucket_diff = bitbucket.control("GET", "bench/summary").get("diff", {})
    minimum = compute_minimum("full", idcs_data, before, record.bitbucket_diff, [])
    record.minimum = minimum.to_dict()
    record.bound = bound_seconds(minimum, limits)
    return record
