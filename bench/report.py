"""Markdown reports and PNG plots from run records (plain dicts, as saved in JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCALE_ORDER = ["S", "M", "L"]
RATE_CAPACITY, RATE_FILL = 60, 5  # Bitbucket's limiter in scenario S-rl
RUN_ORDER = ["initial", "noop", "incremental", "login"]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def run_table(records: list[dict[str, Any]]) -> list[str]:
    lines = ["| scenario | run | via | status | wall s | bound s | wall÷bound | requests "
             "(IDCS + BB) | minimum | req÷min | retries (task) | 429s | failed ops | "
             "peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['scenario']} | {r['run']} | {r['via']} | {r['status']} | {r['wall']:.2f} | "
            f"{r['bound']:.2f} | {_fmt(r['wall_over_bound'])} | {r['total_requests']} "
            f"({r['requests'].get('idcs', 0)} + {r['requests'].get('bitbucket', 0)}) | "
            f"{r['minimum'].get('total', 0)} | {_fmt(r['requests_over_minimum'], 3)} | "
            f"{int(r['client'].get('retries', 0))} ({int(r['client'].get('task_retries', 0))})"
            " | "
            f"{r['responses'].get('bitbucket', {}).get('429', 0)} | "
            f"{r['summary'].get('failures', '–') if r['summary'] else '–'} | "
            f"{r['peak_rss_mb']:.0f} |")
    return lines


def run_detail(r: dict[str, Any]) -> list[str]:
    lines = [f"### {r['scenario']} / {r['run']} ({r['via']})", "",
             f"- status **{r['status']}**" + (f": {r['message']}" if r.get("message") else ""),
             f"- wall {r['wall']:.2f} s; pipeline CPU {r['cpu_seconds']:.1f} s; emulator CPU "
             + ", ".join(f"{k} {v:.1f} s" for k, v in r["emulator_cpu_seconds"].items()),
             f"- load average at start: {r['load']}"]
    lines += [f"- {note}" for note in r.get("notes", [])]
    if r["stages"]:
        lines += ["", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in r["stages"].items()]
    m = r["minimum"]
    lines += ["", "| API | endpoint | requests |", "|---|---|---|"]
    for api, calls in r["calls"].items():
        lines += [f"| {api} | `{k}` | {v} |" for k, v in calls.items()]
    lines += ["", "minimum (computed from the data):", "",
              "| part | item | requests |", "|---|---|---|"]
    for part in ("idcs", "bitbucket_reads", "bitbucket_writes"):
        lines += [f"| {part} | {k} | {v} |" for k, v in m.get(part, {}).items()]
    lines += [f"| **total** | | **{m.get('total', 0)}** |", ""]
    if r.get("bitbucket_diff"):
        lines.append("Bitbucket changes: " + ", ".join(
            f"{k} {v}" for k, v in r["bitbucket_diff"].items() if v))
    if r.get("client"):
        lines.append("Client transport: " + ", ".join(
            f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}"
            for k, v in sorted(r["client"].items())))
    lines.append("Responses by status: " + json.dumps(r.get("responses", {})))
    return [*lines, ""]


def scenario_markdown(name: str, records: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    lines = [f"# Benchmark {name}", "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), "",
             *run_table(records), ""]
    for r in records:
        lines += run_detail(r)
    return "\n".join(lines)


def latest_records(results: Path) -> dict[str, list[dict[str, Any]]]:
    """The newest saved records of each scenario (``runs/*.json``, newest file wins)."""
    newest: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for path in sorted((results / "runs").glob("*.json")):
        data = json.loads(path.read_text())
        scenario = data["scenario"]
        if scenario not in newest or path.name > newest[scenario][0]:
            newest[scenario] = (path.name, data["records"])
    return {k: v[1] for k, v in newest.items()}


def _find(records: list[dict[str, Any]], run: str, via: str = "pipeline"
          ) -> dict[str, Any] | None:
    return next((r for r in records if r["run"] == run and r["via"] == via), None)


def targets_table(latest: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The issue's targets next to the measured numbers (– where not measured)."""
    m, lg, rl = latest.get("M", []), latest.get("L", []), latest.get("S-rl", [])
    mi, mn, mc, ml = (_find(m, k) for k in RUN_ORDER)
    li = _find(lg, "initial")
    rli = _find(rl, "initial")
    rows = []

    def row(target: str, measured: str, ok: bool | None) -> None:
        rows.append(f"| {target} | {measured} | {'✅' if ok else ('❌' if ok is False else '–')} |")

    if mi:
        row("M initial sync ≤ 90 s wall", f"{mi['wall']:.1f} s", mi["wall"] <= 90)
        row("M initial wall ÷ bound ≤ 1.5", _fmt(mi["wall_over_bound"]),
            (mi["wall_over_bound"] or 99) <= 1.5)
        row("M initial requests ≤ 1.05 × minimum", _fmt(mi["requests_over_minimum"], 3),
            (mi["requests_over_minimum"] or 99) <= 1.05)
    if mn:
        writes = sum(mn["minimum"].get("bitbucket_writes", {}).values())
        row("M no-op re-sync ≤ 15 s, zero writes", f"{mn['wall']:.1f} s, {writes} writes",
            mn["wall"] <= 15 and writes == 0)
    if mc:
        row("M incremental (100 changes) ≤ 10 s", f"{mc['wall']:.1f} s", mc["wall"] <= 10)
    if ml:
        row("on-login user ≤ 2 s (M, pipeline time)", f"{ml['wall']:.2f} s", ml["wall"] <= 2)
    if li:
        row("L initial ≤ 15 min", f"{li['wall'] / 60:.1f} min", li["wall"] <= 900)
        row("L peak RSS ≤ 1.5 GB", f"{li['peak_rss_mb']:.0f} MB", li["peak_rss_mb"] <= 1536)
        if mi:
            growth = (li["wall"] / mi["wall"]) / (li["minimum"]["total"] / mi["minimum"]["total"])
            row("L time grows no worse than linearly from M", f"{growth:.2f}× linear (time "
                "ratio ÷ minimum-requests ratio)", growth <= 1.1)
    if rli:
        bb = rli["requests"].get("bitbucket", 0)
        throttled = rli["responses"].get("bitbucket", {}).get("429", 0)
        # What the bucket allowed over the run: its capacity plus the refill, 5 per second.
        allowed = RATE_CAPACITY + RATE_FILL * rli["wall"]
        share = (bb - throttled) / allowed if allowed else 0
        failed = rli["summary"].get("failures", 0) if rli["summary"] else None
        row("rate limiter on (S): ≥ 90% of the allowed rate",
            f"{bb - throttled} accepted in {rli['wall']:.0f} s = {100 * share:.0f}% of the "
            f"{allowed:.0f} the bucket allowed (initial run)", share >= 0.9)
        row("rate limiter on (S): 429s ≤ 1% of requests",
            f"{throttled} of {bb} ({100 * throttled / max(bb, 1):.1f}%)", throttled <= 0.01 * bb)
        row("rate limiter on (S): zero failed operations", f"{failed}", failed == 0)
    return ["| target | measured | met |", "|---|---|---|", *rows]


def summary_markdown(latest: dict[str, list[dict[str, Any]]], settings: dict[str, Any]) -> str:
    ordered = [name for name in [*SCALE_ORDER, "S-rl"] if name in latest]
    ordered += sorted(set(latest) - set(ordered))
    records = [r for name in ordered for r in latest[name]]
    lines = ["# Benchmark summary (latest run of each scenario)", "",
             "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), "",
             "## Targets", "", *targets_table(latest), "",
             "## All runs", "", *run_table(records), "",
             "Plots: `time_vs_scale.png`, `requests_vs_scale.png`, `actual_vs_bound.png`.",
             "Per-run details (stages, requests per endpoint, minimum breakdown): `runs/`.", ""]
    return "\n".join(lines)


def plot(latest: dict[str, list[dict[str, Any]]], results: Path) -> list[Path]:
    """Time and requests versus scale, and actual versus bound, per run kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [s for s in SCALE_ORDER if s in latest]
    if not scales:
        return []
    users = {s: _users(latest[s]) for s in scales}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in RUN_ORDER:
        points = [(users[s], r["wall"]) for s in scales if (r := _find(latest[s], run))]
        if points:
            (line,) = ax.plot(*zip(*points, strict=True), marker="o", label=f"{run} (actual)")
            bounds = [(users[s], r["bound"]) for s in scales if (r := _find(latest[s], run))]
            ax.plot(*zip(*bounds, strict=True), linestyle="--", alpha=0.6,
                    color=line.get_color(), label=f"{run} (bound)")
    _log_axes(ax, "wall time (s)", "Wall time versus scale (dashed: physical bound)")
    paths.append(_save(fig, results / "time_vs_scale.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in RUN_ORDER:
        points = [(users[s], r["total_requests"]) for s in scales
                  if (r := _find(latest[s], run))]
        if points:
            (line,) = ax.plot(*zip(*points, strict=True), marker="o", label=f"{run} (actual)")
            mins = [(users[s], r["minimum"]["total"]) for s in scales
                    if (r := _find(latest[s], run))]
            ax.plot(*zip(*mins, strict=True), linestyle="--", alpha=0.6,
                    color=line.get_color(), label=f"{run} (minimum)")
    _log_axes(ax, "requests", "Requests versus scale (dashed: minimum the APIs allow)")
    paths.append(_save(fig, results / "requests_vs_scale.png"))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels, actual, bound = [], [], []
    for name, records in latest.items():
        for r in records:
            labels.append(f"{name}\n{r['run']}" + ("\n(DAG)" if r["via"] != "pipeline" else ""))
            actual.append(r["wall"])
            bound.append(r["bound"])
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], actual, width=0.4, label="actual wall time")
    ax.bar([x + 0.2 for x in xs], bound, width=0.4, label="physical bound")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("seconds")
    ax.set_title("Actual versus bound, every run")
    ax.legend()
    paths.append(_save(fig, results / "actual_vs_bound.png"))
    return paths


def _users(records: list[dict[str, Any]]) -> int:
    r = _find(records, "initial")
    return int(r["summary"].get("users_created", 0)) if r and r["summary"] else 0


def _log_axes(ax: Any, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("users synced (initial run)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
