"""Chaos: seeded syncs of a 1,000-user organisation while both emulators misbehave.

Both emulators inject, at a seeded rate of 5-10% of requests, 429 (with and without
``Retry-After``), 500, 502, 503, 504, late answers past the client's read timeout (the change
lands, the answer does not), connection resets and slow-drip bodies; each run's IDCS client also
has its bearer token revoked after its first call. Run 1 starts from an empty Bitbucket; each
later run first changes the organisation (people leave and come back, names and groups change)
and drifts Bitbucket by hand, so every run has real work. After each run:

- Bitbucket equals the desired state (users, details, managed groups' members);
- nothing was created twice (the emulator's write log: one successful create per name);
- every planned operation has a final status in the audit store;
- the run succeeded, or failed naming the undone operations, and clearing it completed them.

The figures go to ``test-artifacts/chaos/summary.json``. The stages run in-process (zero
latency, short retry waits); ``test_secrets.py`` runs the DAG itself under faults.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.http import HttpSettings
from identity_sync.model import key

from .conftest import FAST, Env

ROOT = Path(__file__).resolve().parents[2]
ORG_USERS, ORG_GROUPS = 1000, 50
# A late answer must outlast the client's read timeout to be a timeout at all.
CHAOS = HttpSettings(**{**FAST.__dict__, "timeout": 0.5, "connect_timeout": 0.5})
LATE_ANSWER = 0.6
FRAGILE = HttpSettings(**{**CHAOS.__dict__, "retries": 1})
STATUSES = [429, 429, 500, 502, 503, 504]


def faults(seed: int, rate: float) -> dict[str, Any]:
    """Every fault kind, at ``rate`` of requests in all."""
    return {"seed": seed, "error_rate": rate * 0.6, "error_statuses": STATUSES,
            "retry_after": 0.01 if seed % 2 else None, "timeout_rate": rate * 0.1,
            "timeout_seconds": LATE_ANSWER, "reset_rate": rate * 0.15,
            "slow_body_rate": rate * 0.15, "slow_body_seconds": 0.05}


def idcs_script() -> list[dict[str, Any]]:
    """IDCS takes few requests per run, so each run also gets one of each kind for certain."""
    return [{"fault": "error", "status": 429, "path": "/admin/v1/Users"},
            {"fault": "error", "status": 503, "path": "/admin/v1/Groups"},
            {"fault": "reset", "path": "/admin/v1/Grants"}]


def drift(env: Env, rng: random.Random) -> None:
    """Changes between runs: in IDCS (leavers and returners, new display names, moves between
    groups) and by hand in Bitbucket (memberships removed, details edited)."""
    org = env.idcs_app.state.emulator.to_dict()
    users = org["users"]
    for user in rng.sample(users, 6):
        user["active"] = not user["active"]
    for user in rng.sample(users, 25):
        user["displayName"] = f"{user['displayName']} {rng.randint(2, 99)}"
    ids = [u["id"] for u in users]
    groups = [g for g in org["groups"] if g.get("members")]
    for _ in range(25):
        group = rng.choice(groups)
        if rng.random() < 0.5 and group["members"]:
            group["members"].pop(rng.randrange(len(group["members"])))
        else:
            uid = rng.choice(ids)
            if all(m["value"] != uid for m in group["members"]):
                group["members"].append({"value": uid, "type": "User"})
    env.idcs_app.state.emulator.load_dict(org)
    state = env.bb_state
    with state.lock:
        managed = [g for g, members in state.members.items() if len(members) > 3]
        for gkey in rng.sample(managed, min(5, len(managed))):
            for uid in rng.sample(sorted(state.members[gkey]), 2):
                state.members[gkey].discard(uid)
        people = [u for u in state.users.values() if u.name not in ("admin", "sync-admin")]
        for user in rng.sample(people, min(5, len(people))):
            user.display_name = "edited by hand"


def chaos_runs(env: Env, seeds: list[int]) -> dict[str, Any]:
    injected: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    started = time.monotonic()
    for n, seed in enumerate(seeds):
        rng = random.Random(seed)
        if n:
            drift(env, rng)
        rate = rng.uniform(0.05, 0.10)
        # Every fourth run: a client that gives up after one retry, apply tasks without task
        # retries, and a user update refused twice for certain, so an operation does fail, the
        # run must say which, and a clear must finish it (random faults alone may miss so few
        # requests). The read stages keep their task retries: two faults in a row on one of
        # their concurrent reads would otherwise stop the run before the apply it is about.
        fragile = seed % 4 == 0
        certain = [{"fault": "error", "status": 503, "method": "PUT", "path": "/admin/users"}] * 2
        env.control("bitbucket", "PUT", "faults",
                    json={**faults(seed, rate), "script": certain if fragile and n else []})
        env.control("idcs", "PUT", "faults", json={**faults(seed, rate),
                                                   "script": idcs_script()})
        env.control("bitbucket", "DELETE", "writes")
        idcs = env.idcs(CHAOS)
        idcs.get("/admin/v1/Users", {"count": 0})  # the run's token...
        env.control("idcs", "POST", "tokens/revoke")  # ...revoked before the extract uses it
        run_id = f"chaos-{seed}"
        bb = env.bitbucket(FRAGILE if fragile else CHAOS)
        result = env.run(run_id, bb=bb, idcs=idcs, approve=True,
                         task_retries=3, apply_retries=0 if fragile else 3)
        plan = env.store.plan(run_id)
        totals["runs"] += 1
        totals["operations"] += len(plan)
        totals["task_retries"] += result.task_retries
        assert result.stopped_at is None, f"seed {seed}: stopped at {result.stopped_at}: " \
                                          f"{result.error}"
        assert env.unfinished(run_id) == [], f"seed {seed}: operations without a final status"
        if result.status != "succeeded":
            totals["failed_runs"] += 1
            assert result.status == "failed"
            assert result.message and "operations not done (" in result.message, result.message
            env.control("bitbucket", "PUT", "faults", json={})
            rerun = env.clear_and_rerun(run_id, bb=env.bitbucket(CHAOS))
            assert rerun.status == "succeeded", f"seed {seed}: rerun {rerun.message}"
        for which in ("bitbucket", "idcs"):
            counted = env.control(which, "GET", "responses")
            injected.update(counted["injected"])
            answered.update(counted["responses"])
            env.control(which, "DELETE", "responses")
            env.control(which, "PUT", "faults", json={})
        assert env.divergence(run_id) == [], f"seed {seed}"
        duplicates = env.duplicate_creates()
        assert duplicates == {}, f"seed {seed}: created twice: {duplicates}"
        lost = [op for op in env.store.plan(run_id) if op["status"] not in ("done", "skipped")]
        assert lost == [], f"seed {seed}: {lost[:3]}"
        totals["creates"] += sum(op["kind"] == "create_user" for op in plan)
    return {"runs": totals["runs"], "organisation_users": ORG_USERS,
            "faults_injected": dict(sorted(injected.items())),
            "faults_total": sum(injected.values()),
            "answers_by_status": dict(sorted(answered.items())),
            "operations": totals["operations"], "users_created": totals["creates"],
            "duplicates": 0, "lost": 0, "failed_then_cleared": totals["failed_runs"],
            "apply_task_retries": totals["task_retries"],
            "seconds": round(time.monotonic() - started, 1)}


def write_summary(name: str, summary: dict[str, Any]) -> None:
    out = ROOT / "test-artifacts" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


@pytest.mark.chaos
def test_twenty_seeded_chaos_runs_converge_without_duplicates(make_env: Any) -> None:
    env = make_env(generate_idcs_org(11, ORG_USERS, ORG_GROUPS))
    summary = chaos_runs(env, list(range(1, 21)))
    write_summary("summary.json", summary)
    assert summary["runs"] == 20
    assert {"timeout", "reset", "slow_body"} <= set(summary["faults_injected"])
    # the emulators answer none of these by themselves (rate limiting is off): all injected
    assert {"429", "500", "502", "503", "504"} <= set(summary["answers_by_status"])
    assert summary["failed_then_cleared"] >= 1  # the fragile runs did fail, and were cleared
    assert {key(u.name) for u in env.bb_state.users.values()} >= {"sync-admin", "admin"}
