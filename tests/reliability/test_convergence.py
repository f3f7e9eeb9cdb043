"""Overlapping runs converge per identity (design invariant 3), through both emulators' real
APIs: an older plan never reverts a newer one, and runs for different users never interact."""

from __future__ import annotations

import copy
from typing import Any

from identity_sync import pipeline
from identity_sync.emulators.bitbucket import DEMO_ADMIN_USER
from identity_sync.emulators.idcs import DEMO_APP_ID
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.mapping.rules import SyncRules
from identity_sync.model import key
from identity_sync.subset import Subset

from ..e2e.test_sync_dag import expected_state, slug
from .conftest import Env, RunResult

ORG = generate_idcs_org(seed=5, users=40, groups=6)


def plan_run(env: Env, run_id: str, *, users: tuple[str, ...] = (),
             dag_id: str = "idcs_bitbucket_sync", rules: SyncRules | None = None
             ) -> dict[str, list[dict[str, Any]]]:
    """Every stage up to the recorded plan (nothing written to Bitbucket yet)."""
    store, rules = env.store, rules or env.rules
    pipeline.start(store, run_id, dag_id=dag_id, trigger="manual",
                   mode="user" if users else "full", dry_run=False, rules_hash="t")
    subset = Subset.from_params(list(users), []) if users else None
    pipeline.extract(store, run_id, env.idcs(), rules, DEMO_APP_ID, subset=subset)
    pipeline.check_quality(store, run_id)
    pipeline.map_desired(store, run_id, rules)
    pipeline.check_desired_quality(store, run_id, rules)
    pipeline.read_bitbucket(store, run_id, env.bitbucket())
    out = pipeline.plan(store, run_id, rules, DEMO_ADMIN_USER, pipeline.RunOptions())
    return out.get("batches", out)


def apply_run(env: Env, run_id: str, batches: dict[str, list[dict[str, Any]]]) -> RunResult:
    result = RunResult(run_id, "", None)
    env.apply(batches, env.bitbucket(), result, 3, None)
    summary = pipeline.finish(env.store, run_id)
    result.status, result.message = summary["status"], summary["message"]
    return result


def bitbucket_user(env: Env, name: str) -> tuple[str, str] | None:
    state = env.bb_state
    with state.lock:
        found = state.find_user(name)
        return None if found is None else (found.display_name, found.email)


def groups_of(env: Env, name: str) -> set[str]:
    state = env.bb_state
    with state.lock:
        user = state.find_user(name)
        return {g for g, members in state.members.items() if user and user.id in members}


def test_an_older_full_plan_never_reverts_a_newer_login(make_env) -> None:
    """A full run plans from older IDCS data; meanwhile IDCS changes alice, her on-login run
    applies the newer data, and only then the full run applies: alice stays at the newest
    IDCS state, and the full run's other work (bob) still lands."""
    env = make_env(copy.deepcopy(ORG))
    users, members = expected_state(env.idcs_app.state.emulator.to_dict())
    groups_by_user: dict[str, set[str]] = {}
    for group, names in members.items():
        for name in names:
            groups_by_user.setdefault(name, set()).add(group)
    alice = next(n for n in sorted(users) if len(groups_by_user.get(n, set())) >= 2)
    bob = next(n for n in sorted(users) if n != alice)
    old_group = sorted(groups_by_user[alice] - {"bitbucket-users"})[0]

    full = plan_run(env, "full-old")

    dump = copy.deepcopy(env.idcs_app.state.emulator.to_dict())
    user = next(u for u in dump["users"] if u["userName"].lower() == alice)
    user["displayName"] = "Newest Alice"
    group = next(g for g in dump["groups"] if slug(g["displayName"]) == old_group)
    group["members"] = [m for m in group["members"] if m["value"] != user["id"]]
    env.idcs_app.state.emulator.load_dict(dump)

    login = apply_run(env, "login-alice", plan_run(env, "login-alice", users=(alice,),
                                                    dag_id="idcs_bitbucket_login_sync"))
    assert login.status == "succeeded", login
    full_result = apply_run(env, "full-old", full)

    assert bitbucket_user(env, alice)[0] == "Newest Alice"
    assert key(old_group) not in groups_of(env, alice)
    assert bitbucket_user(env, bob) == users[bob]  # the rest of the full run landed
    assert full_result.status in ("succeeded", "superseded"), full_result
    plan = env.store.plan("full-old")
    alice_ops = [op for op in plan if op["identities"] and any(
        i.startswith("user:") and i == f"user:{user['id']}" for i in op["identities"])
        and op["kind"] != "add_members"]
    assert alice_ops and {op["status"] for op in alice_ops} == {"superseded"}
    attempts = [a for a in env.store.attempts("full-old") if a["outcome"] == "superseded"]
    assert attempts and all("login-alice" in a["error"] for a in attempts)


def test_runs_for_different_users_never_interact(make_env) -> None:
    """The lost-logins bug: two on-login runs planned together; the newer one (another person)
    must not take the older one's user away. Both land, both runs are true."""
    env = make_env(copy.deepcopy(ORG))
    users, _ = expected_state(env.idcs_app.state.emulator.to_dict())
    first, second = sorted(users)[2:4]
    plans = {name: plan_run(env, f"login-{name}", users=(name,),
                            dag_id="idcs_bitbucket_login_sync") for name in (first, second)}
    results = [apply_run(env, f"login-{name}", plans[name]) for name in (second, first)]
    assert [r.status for r in results] == ["succeeded", "succeeded"], results
    for name in (first, second):
        assert bitbucket_user(env, name) == users[name]
    assert not [a for a in env.store.attempts(f"login-{first}") if a["outcome"] == "superseded"]


def test_a_run_that_stops_before_planning_leaves_its_users_to_the_older_plan(make_env) -> None:
    """A newer login run takes alice before reading Bitbucket, then stops before planning (its
    plan task died): the older full run's plan for her still lands."""
    env = make_env(copy.deepcopy(ORG))
    users, _ = expected_state(env.idcs_app.state.emulator.to_dict())
    alice = sorted(users)[4]
    full = plan_run(env, "full-old")
    store = env.store
    pipeline.start(store, "login-dies", dag_id="idcs_bitbucket_login_sync", trigger="manual",
                   mode="user", dry_run=False, rules_hash="t")
    pipeline.extract(store, "login-dies", env.idcs(), env.rules, DEMO_APP_ID,
                     subset=Subset.from_params([alice], []))
    pipeline.map_desired(store, "login-dies", env.rules)
    pipeline.read_bitbucket(store, "login-dies", env.bitbucket())  # takes alice
    assert pipeline.finish(store, "login-dies")["status"] == "failed"  # never planned
    result = apply_run(env, "full-old", full)
    assert result.status == "succeeded", result
    assert bitbucket_user(env, alice) == users[alice]


def test_a_blocked_newer_plan_leaves_its_users_to_the_older_plan(make_env) -> None:
    """A newer full run's plan trips a gate nobody may approve (blocked): it writes nothing, so
    the older run's plan still lands in full instead of being left to it."""
    env = make_env(copy.deepcopy(ORG))
    users, _ = expected_state(env.idcs_app.state.emulator.to_dict())
    older = plan_run(env, "full-old")
    strict = env.rules.model_copy(update={"safety": env.rules.safety.model_copy(
        update={"min_users": 10**6, "approvers": []})})
    newer = plan_run(env, "full-new", rules=strict)
    assert all(not batches for batches in newer.values())
    assert pipeline.finish(env.store, "full-new")["status"] == "blocked"
    result = apply_run(env, "full-old", older)
    assert result.status == "succeeded", result
    assert all(bitbucket_user(env, name) == details for name, details in users.items())
