"""Both emulators on real sockets, an audit store, and the sync's stages run in-process the way
the DAG runs them (phases in order, a failed phase stops the later ones, transient batch
failures retried like Airflow's retry policy would, a "clear" that re-runs the apply)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_idcs_app,
)
from identity_sync.http import ApiError, HttpSettings
from identity_sync.idcs.client import IdcsClient
from identity_sync.loading.apply import ApplyError
from identity_sync.loading.breaker import BreakerSettings
from identity_sync.mapping.rules import SyncRules, load_rules
from identity_sync.model import DesiredState, key
from identity_sync.planning.operations import PHASE_ORDER

DAG_ID = "idcs_bitbucket_sync"
# Fast but real: small waits between retries, short timeouts, no client-side pacing.
FAST = HttpSettings(timeout=1.0, connect_timeout=1.0, retries=6, backoff_factor=0.01,
                    backoff_max=0.05, default_retry_after=0.01, retry_max_wait=30.0,
                    rate_limit_fill_rate=0)


def fast_dir() -> Path:
    """SQLite on tmpfs when there is one: the audit store's commits cost no disk flush."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="idsync-rel-", dir=base))


@dataclass
class RunResult:
    run_id: str
    status: str
    message: str | None
    stopped_at: str | None = None  # the stage that raised, for runs that stop before applying
    error: str | None = None
    apply_errors: list[str] = field(default_factory=list)
    task_retries: int = 0


@dataclass
class Env:
    idcs_app: Any
    bb_app: Any
    idcs_url: str
    bb_url: str
    store: AuditStore
    rules: SyncRules

    # -- clients --------------------------------------------------------------------------
    def bitbucket(self, settings: HttpSettings = FAST, password: str = DEMO_ADMIN_PASSWORD
                  ) -> BitbucketClient:
        return BitbucketClient(self.bb_url, DEMO_ADMIN_USER, password, settings=settings)

    def idcs(self, settings: HttpSettings = FAST) -> IdcsClient:
        return IdcsClient(self.idcs_url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, settings=settings)

    # -- emulator controls --------------------------------------------------------------------
    def control(self, which: str, method: str, path: str, **kwargs: Any) -> Any:
        base = self.idcs_url if which == "idcs" else self.bb_url
        resp = requests.request(method, f"{base}/_emulator/{path}", timeout=10, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    @property
    def bb_state(self) -> Any:
        return self.bb_app.state.emulator

    def writes(self) -> list[dict[str, Any]]:
        return self.control("bitbucket", "GET", "writes")

    def duplicate_creates(self) -> dict[str, int]:
        """Names created more than once (a 204/200 answer to a create, per name)."""
        landed: Counter[str] = Counter()
        for w in self.writes():
            if w["method"] == "POST" and w["path"].endswith(("/admin/users", "/admin/groups")) \
                    and w["status"] in (200, 204):
                landed[f"{w['path'].rsplit('/', 1)[1]}:{key(w['query']['name'])}"] += 1
        return {name: n for name, n in landed.items() if n > 1}

    # -- the sync ---------------------------------------------------------------------------
    def run(self, run_id: str, *, bb: BitbucketClient | None = None,
            idcs: IdcsClient | None = None, rules: SyncRules | None = None,
            approve: bool = False, task_retries: int = 3, apply_retries: int | None = None,
            breaker: BreakerSettings | None = None,
            before_apply: Callable[[], None] | None = None) -> RunResult:
        """One sync run, start to finish, as the DAG would run it; ``before_apply`` runs
        between the plan and the first write (to break something at that moment);
        ``apply_retries`` (default ``task_retries``) are the apply tasks' own retries."""
        rules = rules or self.rules
        bb, idcs = bb or self.bitbucket(), idcs or self.idcs()
        store = self.store
        pipeline.start(store, run_id, dag_id=DAG_ID, trigger="manual", mode="full",
                       dry_run=False, rules_hash="reliability")
        stages = [
            ("extract", lambda: pipeline.extract(store, run_id, idcs, rules, DEMO_APP_ID)),
            ("check_quality", lambda: pipeline.check_quality(store, run_id)),
            ("map", lambda: (pipeline.map_desired(store, run_id, rules),
                             pipeline.check_desired_quality(store, run_id, rules))),
            ("read_bitbucket", lambda: pipeline.read_bitbucket(store, run_id, bb)),
        ]
        for name, stage in stages:
            try:
                _with_retries(stage, task_retries)
            except Exception as exc:
                summary = pipeline.finish(store, run_id)
                return RunResult(run_id, summary["status"], summary["message"], name, str(exc))
        planned = pipeline.plan(store, run_id, rules, bb.username, pipeline.RunOptions())
        batches, approval = planned["batches"], planned["approval"]
        if approval["needed"]:  # the DAG's approval task: approve as a named approver, or stop
            if not approve or (store.get_run(run_id) or {})["status"] != "awaiting_approval":
                pipeline.block_run(store, run_id, approval["reason"])
                return RunResult(run_id, "blocked", approval["reason"], "plan",
                                 approval["reason"])
            pipeline.approve_run(store, run_id, "reliability-approver")
        result = RunResult(run_id, "", None)
        if before_apply is not None:
            before_apply()
        self.apply(batches, bb, result,
                   task_retries if apply_retries is None else apply_retries, breaker)
        summary = pipeline.finish(store, run_id)
        result.status, result.message = summary["status"], summary["message"]
        return result

    def apply(self, batches: dict[str, list[dict[str, Any]]], bb: BitbucketClient,
              result: RunResult, task_retries: int, breaker: BreakerSettings | None) -> None:
        """Phases in order; every batch of a phase runs; a failed phase stops the rest."""
        for phase in PHASE_ORDER:
            failed = False
            for batch in batches.get(str(phase), []):
                for attempt in range(task_retries + 1):
                    outcome = pipeline.apply(self.store, bb, batch,
                                             breaker=breaker)
                    try:
                        outcome.raise_for_failures(batch["label"])
                        break
                    except ApplyError as exc:
                        if exc.transient and attempt < task_retries:
                            result.task_retries += 1
                            continue
                        result.apply_errors.append(str(exc))
                        failed = True
                        break
            if failed:
                return

    def clear_and_rerun(self, run_id: str, *, bb: BitbucketClient | None = None) -> RunResult:
        """Clear the run's apply tasks: every batch again (done operations are skipped)."""
        result = RunResult(run_id, "", None)
        self.apply(batch_refs_of(self.store, run_id), bb or self.bitbucket(), result, 3, None)
        summary = pipeline.finish(self.store, run_id)
        result.status, result.message = summary["status"], summary["message"]
        return result

    # -- checks -----------------------------------------------------------------------------
    def divergence(self, run_id: str) -> list[str]:
        """How Bitbucket differs from the run's desired state (empty when converged)."""
        desired = DesiredState.from_dict(self.store.get_artifact(run_id, pipeline.DESIRED))
        state, out = self.bb_state, []
        with state.lock:
            for user in desired.users.values():
                found = state.find_user(user.name)
                if user.active and found is None:
                    out.append(f"missing user {user.name}")
                elif found is not None and user.active and (
                        found.display_name, found.email) != (user.display_name, user.email):
                    out.append(f"stale details of {user.name}")
            by_id = {u.id: u.name for u in state.users.values()}
            for group in desired.managed_groups:
                want = {key(n) for n in desired.memberships.get(group, [])}
                members = state.members.get(key(group))
                if members is None:
                    out.append(f"missing group {group}")
                    continue
                have = {key(by_id[i]) for i in members}
                if want != have:
                    out.append(f"{group}: missing {sorted(want - have)[:3]}, "
                               f"extra {sorted(have - want)[:3]}")
        return out

    def unfinished(self, run_id: str) -> list[dict[str, Any]]:
        return [op for op in self.store.plan(run_id)
                if op["status"] not in ("done", "failed", "skipped", "superseded")]


def batch_refs_of(store: AuditStore, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The batch descriptors of a recorded plan (what XCom would still hold for a clear)."""
    seen: dict[str, set[int]] = {}
    for op in store.plan(run_id):
        seen.setdefault(op["phase"], set()).add(op["batch"])
    return {phase: [{"run_id": run_id, "phase": phase, "batch": b, "label": f"{phase}/{b}"}
                    for b in sorted(batches)] for phase, batches in seen.items()}


def _with_retries(stage: Any, retries: int) -> Any:
    """Airflow's task retries for the read stages: transient API trouble is tried again."""
    for attempt in range(retries + 1):
        try:
            return stage()
        except ApiError as exc:
            if not exc.transient or attempt == retries:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def make_env() -> Iterator[Any]:
    """``make_env(org)`` serves both emulators (IDCS seeded with ``org``) for one test."""
    with ExitStack() as stack:

        def make(org: dict[str, Any], rules: SyncRules | None = None) -> Env:
            idcs_app, bb_app = create_idcs_app(), create_bitbucket_app()
            idcs_app.state.emulator.load_dict(org)
            idcs = stack.enter_context(serving(idcs_app))
            bb = stack.enter_context(serving(bb_app))
            folder = fast_dir()
            stack.callback(shutil.rmtree, folder, True)
            store = AuditStore(f"sqlite:///{folder / 'audit.db'}")
            stack.callback(store.dispose)
            return Env(idcs_app, bb_app, idcs.base_url, bb.base_url, store,
                       rules or load_rules()[0])

        yield make
