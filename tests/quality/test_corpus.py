"""The bad-input corpus, one case per kind of broken IDCS data, through the real stages.

The IDCS emulator serves each case on a real socket; the extract runs through ``IdcsClient``; then
``check_quality``, ``map_desired``, ``check_desired_quality`` and ``plan`` run against an audit
store on a temporary SQLite file (Bitbucket is an empty instance, given as its state artifact).
Each case must end as the corpus says: quarantine (reason stored, everybody else planned), a stop
with a one-line reason and nothing planned, or a stored warning. Any other exception fails it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import (
    DEMO_APP_ID,
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    create_idcs_app,
)
from identity_sync.emulators.idcs_corpus import CASES, Case, base_state, user_id
from identity_sync.http import ApiError, HttpSettings
from identity_sync.idcs.client import IdcsClient, PartialExtractError
from identity_sync.mapping.rules import SyncRules, load_rules
from identity_sync.model import BitbucketState, DesiredState, IdcsSnapshot
from identity_sync.quality.gate import CriticalDataQualityError

DAG_ID = "idcs_bitbucket_sync"
STOPS = (PartialExtractError, ApiError, CriticalDataQualityError, pipeline.SafetyGateError)


@dataclass
class Outcome:
    run_id: str
    stopped_at: str | None = None
    message: str = ""
    stages: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def idcs() -> Iterator[tuple[Any, str]]:
    app = create_idcs_app()
    with serving(app) as server:
        yield app, server.base_url


@pytest.fixture(scope="module")
def rules() -> SyncRules:
    return load_rules()[0]


def run_stages(store: AuditStore, url: str, rules: SyncRules, run_id: str) -> Outcome:
    """The sync up to the plan, as the DAG runs it; a domain error stops it at its stage."""
    outcome = Outcome(run_id)
    pipeline.start(store, run_id, dag_id=DAG_ID, trigger="manual", mode="full", dry_run=False,
                   rules_hash="corpus")
    client = IdcsClient(url, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET,
                        settings=HttpSettings(timeout=10, retries=0))
    stages = [
        ("extract", lambda: pipeline.extract(store, run_id, client, rules, DEMO_APP_ID)),
        ("check_quality", lambda: pipeline.check_quality(store, run_id)),
        ("map_desired", lambda: pipeline.map_desired(store, run_id, rules)),
        ("check_desired_quality", lambda: pipeline.check_desired_quality(store, run_id, rules)),
        ("read_bitbucket", lambda: store.put_artifact(run_id, pipeline.CURRENT,
                                                      BitbucketState().to_dict(), 0)),
        ("plan", lambda: pipeline.plan(store, run_id, rules, "sync-admin",
                                       pipeline.RunOptions())),
    ]
    for name, call in stages:
        try:
            call()
        except STOPS as exc:
            outcome.stopped_at, outcome.message = name, str(exc)
            return outcome
        outcome.stages.append(name)
    return outcome


def run_case(case: Case, idcs: tuple[Any, str], rules: SyncRules, tmp_path: Path
             ) -> tuple[AuditStore, Outcome]:
    app, url = idcs
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    app.state.corruptions.clear()
    if case.history:
        app.state.emulator.load_dict(base_state())
        earlier = run_stages(store, url, rules, "earlier")
        assert earlier.stopped_at is None, earlier.message
        store.update_run("earlier", status="succeeded")
    app.state.emulator.load_dict(case.state())
    app.state.corruptions.configure(case.corruptions or {})
    try:
        return store, run_stages(store, url, rules, f"run-{case.name}")
    finally:
        app.state.corruptions.clear()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, idcs: tuple[Any, str], rules: SyncRules,
                     tmp_path: Path) -> None:
    store, outcome = run_case(case, idcs, rules, tmp_path)
    run = store.get_run(outcome.run_id) or {}
    quarantine = store.quarantined(outcome.run_id)
    if case.outcome == "stop":
        assert outcome.stopped_at == case.stage, outcome
        assert case.expect in outcome.message
        assert "\n" not in outcome.message and len(outcome.message) < 600
        assert store.plan(outcome.run_id) == []  # nothing planned, so nothing written
        assert run["status"] != "succeeded"
        if case.stage == "extract":  # never a snapshot from a partial extract
            with pytest.raises(KeyError):
                store.get_artifact(outcome.run_id, pipeline.SNAPSHOT)
        else:
            assert run["status"] == "failed" and run["message"] == outcome.message
        return

    assert outcome.stopped_at is None, outcome
    assert_nothing_silently_dropped(store, outcome.run_id, quarantine)
    desired = DesiredState.from_dict(store.get_artifact(outcome.run_id, pipeline.DESIRED))
    healthy = {user_id(n) for n in range(1, 11)} - set(case.affected)
    assert healthy <= set(desired.users)
    created = {op["target"] for op in store.plan(outcome.run_id) if op["kind"] == "create_user"}
    assert created == {u.name for u in desired.users.values()}
    if case.outcome == "warning":
        assert quarantine == []
        warned = [r for r in store.dq(outcome.run_id)
                  if r["severity"] == "warning" and not r["success"]]
        assert len(warned) == 1 and warned[0]["unexpected_count"] == 2
        return

    held = {f"{q['record_type']}:{q['record_id']}": q for q in quarantine}
    assert set(case.quarantined) <= set(held), sorted(held)
    for record in case.quarantined:
        assert case.expect in held[record]["reason"], held[record]
    held_users = {q["record_id"] for q in quarantine if q["record_type"] == "user"}
    assert not held_users & set(desired.users)
    planned = " ".join(str(op) for op in store.plan(outcome.run_id))
    for uid in held_users & {user_id(n) for n in range(1, 11)}:
        name = str(next(u for u in case.state()["users"] if u["id"] == uid).get("userName"))
        assert name.casefold() not in {n.casefold() for n in created}
    assert "ghost" not in planned


def assert_nothing_silently_dropped(store: AuditStore, run_id: str,
                                    quarantine: list[dict[str, Any]]) -> None:
    """Every extracted user is either in the desired state or quarantined with a reason."""
    snapshot = IdcsSnapshot.from_dict(store.get_artifact(run_id, pipeline.SNAPSHOT))
    desired = DesiredState.from_dict(store.get_artifact(run_id, pipeline.DESIRED))
    held = {q["record_id"] for q in quarantine if q["record_type"] == "user"}
    for row, user in enumerate(snapshot.users):
        assert (user.id in desired.users or user.id in held
                or f"row-{row}:{user.user_name}" in held), user
    assert all(q["reason"] for q in quarantine)


def test_corpus_has_at_least_25_kinds_and_each_outcome() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 25
    assert {c.outcome for c in CASES} == {"quarantine", "stop", "warning"}
    assert {c.stage for c in CASES if c.outcome == "stop"} >= {"extract", "check_quality",
                                                               "check_desired_quality"}
