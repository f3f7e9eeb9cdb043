"""``python -m bench``: run benchmark scenarios and write ``bench/results/``.

    python -m bench                       # S, S-rl and M (M also through dag.test())
    python -m bench --scenarios S M L     # or any of S, S-rl, M, L
    python -m bench --users 50 --groups 5 --memberships 150 --latency 0   # a custom scenario

Each scenario writes ``results/runs/<time>-<scenario>.md`` (and ``.json``); the summary
``results/latest.md`` and the plots are rebuilt from the newest run of every scenario.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import report
from .scenarios import SCENARIOS, Scenario, Settings, run_scenario

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="*", default=["S", "S-rl", "M"],
                        help=f"any of {', '.join(SCENARIOS)} (default: S S-rl M)")
    parser.add_argument("--users", type=int, help="a custom scenario instead: this many users")
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--memberships", type=int, default=0)
    parser.add_argument("--name", default="custom", help="the custom scenario's name")
    parser.add_argument("--rate-limit", action="store_true",
                        help="custom scenario: turn Bitbucket's rate limiter on")
    parser.add_argument("--changes", type=int, help="custom scenario: IDCS changes before "
                        "the incremental run (default min(100, users / 5))")
    parser.add_argument("--latency", type=float, default=0.02,
                        help="seconds added to every request on both emulators (default 0.02)")
    parser.add_argument("--connections", type=int, default=8,
                        help="allowed concurrency per API in the bound (default 8)")
    parser.add_argument("--apply-workers", type=int, default=4,
                        help="apply batches in parallel, as the DAG's max_active_tis (4)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-dag", action="store_true", help="skip the dag.test() runs")
    parser.add_argument("--runs", nargs="*", default=["initial", "noop", "incremental", "login"])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-summary", action="store_true",
                        help="write only this run's files, not latest.md and the plots")
    parser.add_argument("--summary-only", action="store_true",
                        help="rebuild latest.md and the plots from the saved runs, run nothing")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the pipeline's own progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        logging.getLogger("identity_sync").setLevel(logging.ERROR)
    if args.summary_only:
        write_summary(args.results, describe_settings(Settings(latency=args.latency)))
        return 0
    if args.users is not None:
        scenarios = [Scenario(args.name, args.users, args.groups, args.memberships,
                              rate_limit=args.rate_limit,
                              changes=args.changes or min(100, args.users // 5))]
    else:
        unknown = [s for s in args.scenarios if s not in SCENARIOS]
        if unknown:
            print(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
            return 2
        scenarios = [SCENARIOS[s] for s in args.scenarios]
    settings = Settings(latency=args.latency, connections=args.connections,
                        apply_workers=args.apply_workers, seed=args.seed, dag=not args.no_dag,
                        runs=tuple(args.runs))
    runs_dir = args.results / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    shown = describe_settings(settings)
    worst = 0
    for scenario in scenarios:
        records = [r.to_dict() for r in run_scenario(scenario, settings)]
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        base = runs_dir / f"{stamp}-{scenario.name}"
        meta = {**shown, "scenario": f"{scenario.users} users / {scenario.groups} groups / "
                f"{scenario.memberships} memberships"
                + (", rate limiter on" if scenario.rate_limit else "")}
        base.with_suffix(".json").write_text(json.dumps(
            {"scenario": scenario.name, "settings": meta, "scenario_spec": asdict(scenario),
             "records": records}, indent=1))
        base.with_suffix(".md").write_text(report.scenario_markdown(scenario.name, records, meta))
        print(f"\n{scenario.name}: {base.with_suffix('.md')}")
        print("\n".join(report.run_table(records)))
        worst = max(worst, *(r["status"] not in ("succeeded", "success") for r in records))
    if not args.no_summary:
        write_summary(args.results, shown)
    return int(worst)


def write_summary(results: Path, shown: dict[str, Any]) -> None:
    latest = report.latest_records(results)
    (results / "latest.md").write_text(report.summary_markdown(latest, shown))
    report.plot(latest, results)
    print(f"\nsummary: {results / 'latest.md'}")


def describe_settings(settings: Settings) -> dict[str, Any]:
    import os

    return {"latency": f"{settings.latency * 1000:.0f} ms per request",
            "bound concurrency": f"{settings.connections} connections per API",
            "apply workers": settings.apply_workers,
            "machine": f"{os.cpu_count()} CPUs, shared"}
