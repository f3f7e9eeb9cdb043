"""Crash recovery: a worker killed with SIGKILL in the middle of an apply batch.

The batch runs in a child process against the Bitbucket emulator (served by this process, so
the test sees every write). Once a create has landed in Bitbucket but its answer is being held
back, the child is killed: the operation is in flight, exactly what a lost worker leaves. Then
the batch is run again, as clearing the task would: it converges with no duplicate write, and
the audit store tells what happened to the interrupted operation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from identity_sync import pipeline
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.http import HttpSettings
from identity_sync.loading.apply import INTERRUPTED_NOTE, apply_batch
from identity_sync.planning.operations import Operation, OpKind, assign_batches

from .conftest import DAG_ID, FAST, Env

ROOT = Path(__file__).resolve().parents[2]
USERS = 40
# How long Bitbucket holds the answer to the create that lands: the child must still be waiting
# for it when it is killed, however slowly a loaded machine gets the test there.
HELD = 8
CHILD = """
import sys
from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.http import HttpSettings
from identity_sync.loading.apply import apply_batch
store = AuditStore(sys.argv[1])
client = BitbucketClient(sys.argv[2], "sync-admin", "sync-password",
                         settings=HttpSettings(timeout=60, rate_limit_fill_rate=0))
apply_batch(store, client, "r1", "users", 0)
"""


def wait_for(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def created(env: Env) -> list[dict[str, Any]]:
    return [w for w in env.writes() if w["method"] == "POST" and
            w["path"].endswith("/admin/users")]


def test_sigkill_mid_batch_then_rerun_converges_without_duplicates(make_env: Any) -> None:
    env = make_env(generate_idcs_org(3, 10, 3))
    names = [f"crash.user{i:02d}" for i in range(USERS)]
    ops = [Operation(OpKind.CREATE_USER, n, {"name": n, "displayName": n, "email": f"{n}@x.io"},
                     "new in IDCS", idcs_id=f"id-{n}") for n in names]
    assign_batches(ops, 200, 10)
    pipeline.start(env.store, "r1", dag_id=DAG_ID, trigger="manual", mode="full",
                   dry_run=False, rules_hash="crash")
    env.store.record_plan("r1", ops)
    env.store.update_run("r1", status="applying")
    env.control("bitbucket", "PUT", "faults", json={"latency": 0.05})

    child = subprocess.Popen([sys.executable, "-c", CHILD, env.store.url, env.bb_url],
                             env={**os.environ, "PYTHONPATH": str(ROOT / "include")})
    try:
        wait_for(lambda: len(created(env)) >= 8, "the child to create some users")
        # The next create lands, but its answer is held: the worker dies waiting for it.
        env.control("bitbucket", "PUT", "faults", json={"latency": 0.05, "script": [
            {"fault": "timeout", "method": "POST", "path": "/admin/users", "seconds": HELD}]})
        wait_for(lambda: env.control("bitbucket", "GET", "faults")["script"] == [],
                 "the child to send the create whose answer is held")
        wait_for(lambda: any(env.bb_state.find_user(op["target"]) is not None
                             for op in env.store.plan("r1") if op["status"] == "started"),
                 "that create to land in Bitbucket")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()

    statuses = Counter(op["status"] for op in env.store.plan("r1"))
    # The operations in flight when the worker died: the batch sends several at once.
    in_flight = [op for op in env.store.plan("r1") if op["status"] == "started"]
    assert 1 <= len(in_flight) <= HttpSettings().max_concurrency, statuses
    landed = {op["op_id"] for op in in_flight if env.bb_state.find_user(op["target"])}
    assert landed  # the held create did land
    assert 1 <= statuses["done"] < USERS - len(in_flight)  # the first went out alone

    env.control("bitbucket", "PUT", "faults", json={})
    again = apply_batch(env.store, env.bitbucket(FAST), "r1", "users", 0)  # the cleared task
    summary = pipeline.finish(env.store, "r1")

    assert (summary["status"], again.interrupted, again.failed) == (
        "succeeded", len(in_flight), 0)
    assert {u.name for u in env.bb_state.users.values()} >= set(names)
    successes = Counter(w["query"]["name"] for w in created(env) if w["status"] == 204)
    assert max(successes.values()) == 1 and set(successes) == set(names)  # none written twice
    for op in in_flight:
        attempts = [a for a in env.store.attempts("r1") if a["op_id"] == op["op_id"]]
        assert [a["outcome"] for a in attempts] == ["interrupted", "done"]
        assert attempts[0]["error"] == INTERRUPTED_NOTE
        if op["op_id"] in landed:  # "already exists": the lost create had landed
            assert attempts[1]["http_status"] == 409
        assert env.store.anchors()[f"id-{op['target']}"] == op["target"]
    assert {op["status"] for op in env.store.plan("r1")} == {"done"}
