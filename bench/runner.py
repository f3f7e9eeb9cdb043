"""Run the sync pipeline in this process, stage by stage, as the DAG's tasks call it, and
measure each run: wall time per stage, requests per endpoint, minimum and bound, retries and
429s, peak RSS.

The stages are :mod:`identity_sync.pipeline`'s functions, called in the DAG's order with the
DAG's arguments; apply batches of a phase run on ``apply_workers`` threads (the DAG's
``max_active_tis_per_dagrun``), each batch with a client of its own as each mapped task has.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import DEMO_ADMIN_PASSWORD, DEMO_ADMIN_USER
from identity_sync.emulators.idcs import DEMO_APP_ID, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from identity_sync.idcs.client import IdcsClient
from identity_sync.mapping.rules import load_rules
from identity_sync.model import DesiredState
from identity_sync.planning.operations import PHASE_ORDER
from identity_sync.subset import Subset

from .emulators import EmulatorPair
from .minimum import (
    Limits,
    Minimum,
    bitbucket_read_minimum,
    bitbucket_write_minimum,
    bound_seconds,
    idcs_minimum,
)

log = logging.getLogger(__name__)

SYNC_DAG_ID = "idcs_bitbucket_sync"
LOGIN_DAG_ID = "idcs_bitbucket_login_sync"
FULL_EVERY = timedelta(hours=24)  # the DAG's default IDSYNC_FULL_EVERY_HOURS
APPLY_TASK_RETRIES = 4  # the DAG's apply_batch retries
RETRY_DELAY = float(os.environ.get("IDSYNC_RETRY_DELAY_SECONDS", "30"))  # as the DAG reads it


class RssSampler:
    """Peak resident memory of this process while a run lasts (sampled every 50 ms)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.process = psutil.Process(os.getpid())
        self.interval, self.peak = interval, 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            if self.stop_event.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


@dataclass
class RunRecord:
    """Everything measured about one run; ``to_dict`` is what the reports are made from."""

    scenario: str
    run: str
    via: str
    started: str
    wall: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    status: str = "?"
    message: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    minimum: dict[str, Any] = field(default_factory=dict)
    bound: float = 0.0
    client: dict[str, float] = field(default_factory=dict)
    responses: dict[str, Any] = field(default_factory=dict)
    bitbucket_diff: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    emulator_cpu_seconds: dict[str, float] = field(default_factory=dict)
    load: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        data = asdict(self)
        total_min = self.minimum.get("total", 0)
        data["total_requests"] = self.total_requests
        data["requests_over_minimum"] = self.total_requests / total_min if total_min else None
        data["wall_over_bound"] = self.wall / self.bound if self.bound else None
        return data


def warm_up() -> float:
    """Import what the stages import lazily (Great Expectations takes ~20 s on a busy 2-core
    machine) so the first timed run measures the sync, not the imports. Returns the seconds
    spent; a DAG task pays it in every fresh worker process, which the dag.test() run shows."""
    t0 = time.perf_counter()
    import identity_sync.quality.baseline
    import identity_sync.quality.docs  # noqa: F401
    from identity_sync.model import IdcsSnapshot, IdcsUser
    from identity_sync.quality.checks import check_snapshot

    for name in ("great_expectations", "great_expectations.core", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # The first validation also builds Great Expectations' context: do it once, on one user.
    one = IdcsUser(id="warm-up", user_name="warm.up", display_name="Warm Up", given_name="W",
                   family_name="U", email="warm.up@example.com", active=True, federated=False,
                   group_ids=(), extra={})
    check_snapshot(IdcsSnapshot([one], [], "warm-up", total_users_seen=1))
    return time.perf_counter() - t0


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


class PipelineBench:
    """One scenario's emulators, audit store and rules; :meth:`sync` runs and measures."""

    def __init__(self, scenario: str, pair: EmulatorPair, audit_url: str, *, limits: Limits,
                 apply_workers: int = 4) -> None:
        self.scenario, self.pair, self.limits = scenario, pair, limits
        self.store = AuditStore(audit_url)
        self.rules, self.rules_hash = load_rules()
        self.apply_workers = apply_workers
        self.changes = 100  # IDCS changes the scenario makes before its incremental run

    # -- clients, as the hooks build them ------------------------------------------------------
    def idcs_client(self) -> IdcsClient:
        return IdcsClient(self.pair.idcs.base_url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)

    def bitbucket_client(self) -> BitbucketClient:
        return BitbucketClient(self.pair.bitbucket.base_url, DEMO_ADMIN_USER,
                               DEMO_ADMIN_PASSWORD)

    # -- one run -------------------------------------------------------------------------------
    def sync(self, run: str, *, mode: str, dag_id: str = SYNC_DAG_ID,
             subset: Subset | None = None, changed: int = 0) -> RunRecord:
        """Run the stages for ``mode`` (``full``, ``incremental`` or ``user``) and measure."""
        idcs, bitbucket = self.pair.idcs, self.pair.bitbucket
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        run_id = f"bench__{self.scenario}__{run}__{stamp}"
        record = RunRecord(self.scenario, run, "pipeline", stamp, load=load_average())
        idcs.reset_counters()
        bitbucket.reset_counters()
        bitbucket.control("POST", "bench/mark")
        before = bitbucket.control("GET", "bench/summary")["sizes"]
        idcs_data = idcs.control("GET", "bench/summary", params={"app_id": DEMO_APP_ID})
        emulator_cpu = {"idcs": idcs.cpu_seconds(), "bitbucket": bitbucket.cpu_seconds()}
        stats: Counter[str] = Counter()
        cpu_before = _cpu()
        started = time.perf_counter()
        with RssSampler() as rss:
            try:
                self._stages(record, run_id, mode, dag_id, subset, stats)
            except Exception as exc:  # a stopped run is a result too: record why
                record.status, record.message = "error", f"{type(exc).__name__}: {exc}"
                log.exception("run %s stopped", run_id)
        record.wall = time.perf_counter() - started
        record.cpu_seconds = _cpu() - cpu_before
        record.peak_rss_mb = rss.peak / 2**20
        record.emulator_cpu_seconds = {
            "idcs": idcs.cpu_seconds() - emulator_cpu["idcs"],
            "bitbucket": bitbucket.cpu_seconds() - emulator_cpu["bitbucket"]}
        record.client = dict(stats)
        self._account(record, run_id, mode, subset, changed, before, idcs_data)
        return record

    def _stages(self, record: RunRecord, run_id: str, mode: str, dag_id: str,
                subset: Subset | None, stats: Counter[str]) -> None:
        store, rules = self.store, self.rules

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                record.stages[name] = record.stages.get(name, 0.0) + time.perf_counter() - t0
                log.info("    %s %s: %.1fs (RSS now %.0f MB)", record.run, name,
                         record.stages[name], psutil.Process().memory_info().rss / 2**20)

        with stage("start"):
            pipeline.start(store, run_id, dag_id=dag_id, trigger="manual", mode=mode,
                           dry_run=False, rules_hash=self.rules_hash,
                           rules_version=str(rules.version))
            since = None
            if mode in ("auto", "full", "incremental"):
                resolved, since = pipeline.resolve_mode(store, run_id, mode, FULL_EVERY)
                store.update_run(run_id, mode=resolved, watermark=since)
                if resolved != mode:
                    record.notes.append(f"mode {mode} resolved to {resolved}")
        with stage("extract"):
            client = self.idcs_client()
            pipeline.extract(store, run_id, client, rules, DEMO_APP_ID, subset=subset,
                             since=since)
        with stage("quality"):
            pipeline.check_quality(store, run_id)
        with stage("map"):
            pipeline.map_desired(store, run_id, rules)
            pipeline.check_desired_quality(store, run_id, rules)
        with stage("read_bitbucket"):
            reader = self.bitbucket_client()
            pipeline.read_bitbucket(store, run_id, reader)
            stats.update(reader.transport.stats)
        with stage("plan"):
            planned = pipeline.plan(store, run_id, rules, DEMO_ADMIN_USER,
                                    pipeline.RunOptions())
            batches, approval = planned["batches"], planned["approval"]
            if approval["needed"] and store.get_run(run_id)["status"] == "awaiting_approval":
                # The DAG would wait for a named approver here; the benchmark approves itself.
                pipeline.approve_run(store, run_id, "benchmark")
                record.notes.append(f"safety gate tripped, approved: {approval['reason']}")
        for phase in PHASE_ORDER:
            with stage(f"apply_{phase}"):
                self._apply_phase(batches.get(str(phase), []), dag_id, stats)
        with stage("finish"):
            summary = pipeline.finish(store, run_id)
        record.summary = summary
        record.status, record.message = summary["status"], summary.get("message")

    def _apply_phase(self, batches: list[dict[str, Any]], dag_id: str,
                     stats: Counter[str]) -> None:
        """The phase's batches on ``apply_workers`` threads, a new client per batch (per task)."""
        notify = self.rules.users.initial_password == "notify"
        lock = threading.Lock()

        def one(batch: dict[str, Any]) -> None:
            # As Airflow does with the apply task: a transient failure retries the batch (only
            # its unfinished operations) after a growing delay, up to APPLY_TASK_RETRIES times.
            for attempt in range(APPLY_TASK_RETRIES + 1):
                client = self.bitbucket_client()
                # as the apply task does: parallel batches of a phase share the rate limit
                client.share_rate_limit(min(self.apply_workers, batch.get("batches") or 1))
                result = pipeline.apply(self.store, client, batch,
                                        notify=notify)
                with lock:
                    stats.update(client.transport.stats)
                if not (result.failed and result.transient) or attempt == APPLY_TASK_RETRIES:
                    return
                with lock:
                    stats["task_retries"] += 1
                time.sleep(RETRY_DELAY * 2 ** attempt)

        if not batches:
            return
        with ThreadPoolExecutor(max_workers=self.apply_workers) as pool:
            for future in [pool.submit(one, b) for b in batches]:
                future.result()

    # -- accounting ----------------------------------------------------------------------------
    def _account(self, record: RunRecord, run_id: str, mode: str, subset: Subset | None,
                 changed: int, before: dict[str, Any], idcs_data: dict[str, Any]) -> None:
        idcs, bitbucket = self.pair.idcs, self.pair.bitbucket
        record.calls = {"idcs": idcs.calls(), "bitbucket": bitbucket.calls()}
        record.requests = {k: sum(v.values()) for k, v in record.calls.items()}
        record.responses = {"idcs": idcs.responses().get("responses", {}),
                            "bitbucket": bitbucket.responses().get("responses", {})}
        after = bitbucket.control("GET", "bench/summary")
        record.bitbucket_diff = after.get("diff", {})
        resolved = (self.store.get_run(run_id) or {}).get("mode", mode)
        record.minimum = compute_minimum(
            resolved, idcs_data, before, record.bitbucket_diff, self._groups_to_read(run_id),
            changed=changed, subset_users=len(subset.users) if subset else None).to_dict()
        record.bound = bound_seconds(Minimum(record.minimum["idcs"],
                                             record.minimum["bitbucket_reads"],
                                             record.minimum["bitbucket_writes"]), self.limits)

    def _groups_to_read(self, run_id: str) -> list[str]:
        try:
            return DesiredState.from_dict(self.store.get_artifact(run_id, pipeline.DESIRED)
                                          ).groups_to_read()
        except KeyError:
            return []


def compute_minimum(mode: str, idcs_data: dict[str, Any], before: dict[str, Any],
                    diff: dict[str, int], groups_to_read: list[str], *, changed: int = 0,
                    subset_users: int | None = None) -> Minimum:
    """The run's minimum requests: ``mode`` is the resolved mode (full, incremental, user)."""
    kind = {"full": "full", "incremental": "incremental"}.get(mode, "login")
    if kind == "incremental":
        subset_users = changed
    return Minimum(idcs_minimum(kind, idcs_data, changed),
                   bitbucket_read_minimum(before, groups_to_read,
                                          None if kind == "full" else subset_users),
                   bitbucket_write_minimum(diff))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

