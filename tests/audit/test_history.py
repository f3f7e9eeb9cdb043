"""Run history as indexed queries (issue 16): hundreds of on-login runs since the last full run
hide neither the shrink baseline nor the watermark, the failed streak counts across other DAGs'
runs, and run state that decides the next run is in columns written in transactions. On SQLite
and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from identity_sync import pipeline
from identity_sync.audit import history
from identity_sync.audit import schema as t
from identity_sync.audit.store import AuditStore
from identity_sync.emulators.common import serving
from identity_sync.emulators.idcs import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, create_idcs_app
from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.http import HttpSettings
from identity_sync.idcs.client import IdcsClient
from identity_sync.mapping.rules import parse_rules
from identity_sync.planning.planner import Plan
from identity_sync.quality.baseline import previous_users
from identity_sync.quality.gate import CriticalDataQualityError

from .conftest import T0

SYNC, LOGIN = "idcs_bitbucket_sync", "idcs_bitbucket_login_sync"
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
DAY = timedelta(hours=24)


@pytest.fixture
def store(audit_url: str) -> Iterator[AuditStore]:
    store = AuditStore(audit_url)
    yield store
    store.dispose()


def row(run_id: str, at: datetime, *, dag_id: str = SYNC, status: str = "succeeded",
        mode: str = "full", dry_run: bool = False, **columns: Any) -> dict[str, Any]:
    """A whole ``sync_runs`` row (every column, so rows of one bulk insert share their keys)."""
    values: dict[str, Any] = {c.name: None for c in t.sync_runs.columns}
    values.update(run_id=run_id, dag_id=dag_id, trigger="manual", mode=mode, dry_run=dry_run,
                  status=status, rules_hash="x", counts={}, started_at=at,
                  ended_at=at + MINUTE)
    values.update(columns)
    return values


def logins(count: int, start: datetime, *, status: str = "succeeded") -> list[dict[str, Any]]:
    """``count`` on-login runs, ten seconds apart from ``start``."""
    return [row(f"login-{start:%H%M}-{n}", start + n * timedelta(seconds=10), dag_id=LOGIN,
                mode="user", status=status, users_in_scope=1) for n in range(count)]


def add(store: AuditStore, *rows: dict[str, Any] | list[dict[str, Any]]) -> None:
    flat = [r for item in rows for r in (item if isinstance(item, list) else [item])]
    with store.engine.begin() as conn:
        conn.execute(t.sync_runs.insert(), flat)


def watermark(at: datetime) -> str:
    return (at - pipeline.WATERMARK_OVERLAP).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- last successful run, watermark, quality baseline ------------------------------------------------
def test_300_login_runs_hide_neither_the_last_full_run_nor_the_watermark(
        store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    add(store,
        row("full-1", T0, users_in_scope=120, data_as_of=T0 + MINUTE),
        row("full-failed", T0 + 30 * MINUTE, status="failed", users_in_scope=3),
        row("full-dry", T0 + 40 * MINUTE, dry_run=True, status="dry_run", users_in_scope=4),
        row("full-dry-ok", T0 + 45 * MINUTE, dry_run=True, users_in_scope=5),
        logins(300, T0 + HOUR),
        row("now", T0 + 3 * HOUR, status="running"))
    assert len(store.runs(limit=500)) == 305  # the full run is far outside any window of 200

    found = history.last_successful_run(store, SYNC, exclude_run="now")
    assert found is not None
    assert (found["run_id"], found["users_in_scope"]) == ("full-1", 120)
    assert history.last_successful_run(store, SYNC, mode="incremental") is None
    login = history.last_successful_run(store, LOGIN, mode="user")
    assert login is not None and login["run_id"] == "login-1100-299"
    previous = pipeline.last_successful_run(store, "now")
    assert previous is not None
    assert (previous["run_id"], previous["users_in_scope"]) == ("full-1", 120)
    assert pipeline.last_successful_run(store, "no-such-run") is None

    monkeypatch.setattr(pipeline, "utcnow", lambda: T0 + 3 * HOUR)
    since = watermark(T0 + MINUTE)  # from when full-1's extract began
    assert since == "2026-03-01T09:56:00.000Z"
    assert pipeline.resolve_mode(store, "now", "auto", DAY) == ("incremental", since)
    assert pipeline.resolve_mode(store, "now", "incremental", DAY) == ("incremental", since)
    assert pipeline.resolve_mode(store, "now", "auto", 2 * HOUR) == ("full", None)  # due
    assert pipeline.resolve_mode(store, "now", "full", DAY) == ("full", None)

    assert previous_users(store, "now") == (120, "full-1")
    assert history.shrink_baseline(store, SYNC, exclude_run="now") == (120, "full-1")
    assert history.failed_streak(store, SYNC, before_run="now") == 1  # full-failed
    assert history.failed_streak(store, LOGIN) == 0


def test_watermark_comes_from_the_newest_successful_full_or_incremental_run(
        store: AuditStore) -> None:
    add(store,
        row("full-1", T0, users_in_scope=100, data_as_of=T0 + MINUTE),
        row("inc-1", T0 + HOUR, mode="incremental", data_as_of=T0 + HOUR + 2 * MINUTE),
        row("inc-failed", T0 + 2 * HOUR, mode="incremental", status="failed",
            data_as_of=T0 + 2 * HOUR),
        # only reported conflicts left undone: as good as succeeded; written before 0005
        row("inc-2", T0 + 150 * MINUTE, mode="incremental", status="conflicts"),
        row("subset", T0 + 3 * HOUR, mode="subset", data_as_of=T0 + 3 * HOUR),
        logins(300, T0 + 4 * HOUR),
        row("now", T0 + 6 * HOUR, status="running", mode="auto"))
    newest = history.last_successful_run(store, SYNC, mode=None, exclude_run="now")
    assert newest is not None and newest["run_id"] == "inc-2"
    assert pipeline.resolve_mode(store, "now", "incremental", DAY) == (
        "incremental", watermark(T0 + 150 * MINUTE))  # no data_as_of: its start
    store.update_run("inc-2", status="failed")
    assert pipeline.resolve_mode(store, "now", "incremental", DAY) == (
        "incremental", watermark(T0 + HOUR + 2 * MINUTE))
    full = pipeline.last_successful_run(store, "now")
    assert full is not None and full["run_id"] == "full-1"

    # Another DAG's full run is no baseline for this one, and no run at all means full.
    add(store, row("other", T0 + 7 * HOUR, dag_id="another_dag", status="running"))
    assert pipeline.resolve_mode(store, "other", "auto", DAY) == ("full", None)
    assert pipeline.resolve_mode(store, "missing", "incremental", DAY) == ("full", None)


def test_rows_written_before_0005_fall_back_to_the_counts(store: AuditStore) -> None:
    add(store,
        row("old-full", T0, counts={"extract": {"users": 77}}),
        logins(250, T0 + HOUR),
        row("now", T0 + 3 * HOUR, status="running"))
    found = history.last_successful_run(store, SYNC, exclude_run="now")
    assert found is not None and found["users_in_scope"] == 77
    assert previous_users(store, "now") == (77, "old-full")
    add(store, row("no-count", T0 + 2 * HOUR))
    assert history.shrink_baseline(store, SYNC, exclude_run="now") is None
    assert previous_users(store, "now") is None


def test_subset_and_incremental_runs_have_no_shrink_baseline(store: AuditStore) -> None:
    add(store,
        row("full-1", T0, users_in_scope=50),
        row("part", T0 + HOUR, status="running", mode="subset"),
        row("inc", T0 + HOUR, status="running", mode="incremental"),
        row("user", T0 + HOUR, dag_id=LOGIN, status="running", mode="user"))
    assert [previous_users(store, r) for r in ("part", "inc", "user", "missing")] == [None] * 4


# -- failed streak ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("statuses", "streak"), [
    (["failed", "blocked", "succeeded", "failed"], 2),
    (["running", "failed", "failed", "failed"], 3),  # a run still going does not count
    (["planned", "applying", "blocked"], 1),
    (["succeeded", "failed"], 0),
    (["failed", "conflicts", "failed"], 1),  # only reported conflicts: not a failure
    (["failed", "superseded", "failed"], 1),
    (["failed", "failed"], 2),
    ([], 0),
])
def test_failed_streak_counts_the_dags_latest_finished_runs(
        store: AuditStore, statuses: list[str], streak: int) -> None:
    """Statuses newest first; a dry run and another DAG's run right after the newest one are
    skipped (the semantics of the former ``breaker.failed_run_streak``)."""
    rows = [row(f"r{n}", T0 - n * HOUR, status=s) for n, s in enumerate(statuses)]
    rows += [row("dry", T0 - 30 * MINUTE, dry_run=True),
             row("dry-failed", T0 - 20 * MINUTE, dry_run=True, status="failed"),
             row("other", T0 - 10 * MINUTE, dag_id="other", status="succeeded")]
    add(store, rows)
    assert history.failed_streak(store, SYNC) == streak


def test_failed_streak_across_300_runs_of_another_dag(store: AuditStore) -> None:
    failed = [row(f"f{n:03}", T0 + n * MINUTE, status="failed") for n in range(300)]
    add(store, row("ok", T0 - HOUR), failed, logins(300, T0 + MINUTE // 2))
    assert history.failed_streak(store, SYNC) == 300
    assert history.failed_streak(store, SYNC, before_run="f299") == 299
    assert history.failed_streak(store, LOGIN) == 0

    add(store, row("recovered", T0 + 6 * HOUR))  # 300 failed runs, then one success
    assert history.failed_streak(store, SYNC) == 0
    add(store, row("going", T0 + 7 * HOUR, status="applying"),
        row("dry", T0 + 8 * HOUR, status="failed", dry_run=True),
        logins(300, T0 + 9 * HOUR, status="failed"))
    assert history.failed_streak(store, SYNC) == 0
    assert history.failed_streak(store, LOGIN) == 300
    add(store, row("again-1", T0 + 10 * HOUR, status="failed"),
        row("again-2", T0 + 11 * HOUR, status="blocked"))
    assert history.failed_streak(store, SYNC) == 2
    assert history.failed_streak(store, SYNC, before_run="recovered") == 302  # ignoring it


def test_failure_callback_writes_the_streak_to_its_column(
        store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from identity_sync_airflow import tasks

    add(store, row("ok", T0), logins(250, T0 + MINUTE),
        row("f1", T0 + HOUR, status="failed"), logins(50, T0 + 61 * MINUTE, status="failed"),
        row("f2", T0 + 2 * HOUR, status="blocked"),
        row("now", T0 + 3 * HOUR, status="applying", counts={"extract": {"users": 9}}))
    monkeypatch.setattr(tasks, "_store", lambda: store)
    assert tasks.failed_streak(SYNC, "now") == 3
    run = store.get_run("now")
    assert run is not None and run["failed_streak"] == 3
    assert run["counts"] == {"extract": {"users": 9}}  # not in the counts any more


# -- run state in columns, written in transactions ----------------------------------------------------
def test_merge_counts_from_8_threads_loses_no_section(audit_url: str) -> None:
    stores = [AuditStore(audit_url) for _ in range(4)]  # two threads per engine (and lock)
    stores[0].start_run("r", dag_id=SYNC, trigger="manual", mode="full", dry_run=False,
                        rules_hash="x")
    pipeline.merge_counts(stores[0], "r", extract={"users": 5})
    start, errors = threading.Barrier(8), []

    def work(n: int) -> None:
        try:
            start.wait()
            for k in range(10):
                pipeline.merge_counts(stores[n % 4], "r", **{f"t{n}-{k}": {"n": n, "k": k}})
        except Exception as exc:  # surfaced below, with the thread's number
            errors.append((n, exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        run = stores[0].get_run("r")
        assert run is not None
        assert run["counts"] == {"extract": {"users": 5}, **{
            f"t{n}-{k}": {"n": n, "k": k} for n in range(8) for k in range(10)}}
        assert stores[0].merge_run_counts("missing", {"x": 1}) is None
    finally:
        for s in stores:
            s.dispose()


def test_merge_run_counts_sets_columns_in_the_same_transaction(store: AuditStore) -> None:
    store.start_run("r", dag_id=SYNC, trigger="manual", mode="full", dry_run=False,
                    rules_hash="x")
    merged = store.merge_run_counts("r", {"extract": {"users": 3}}, users_in_scope=3)
    assert merged == {"extract": {"users": 3}}
    merged = store.merge_run_counts("r", {"planned": {"create_user": 3}})
    assert merged == {"extract": {"users": 3}, "planned": {"create_user": 3}}
    run = store.get_run("r")
    assert run is not None and run["users_in_scope"] == 3 and run["counts"] == merged


def test_history_queries_use_the_history_index(store: AuditStore) -> None:
    add(store, row("full-1", T0, users_in_scope=10), logins(300, T0 + HOUR),
        row("now", T0 + 3 * HOUR, status="running"))
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "sync_runs" in statement and not statement.startswith("EXPLAIN"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        history.last_successful_run(store, SYNC, exclude_run="now")
        history.last_successful_run(store, SYNC, mode=None, exclude_run="now")
        history.failed_streak(store, SYNC, before_run="now")
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    assert len(seen) == 3  # one query each
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE sync_runs")
            conn.exec_driver_sql("SET enable_seqscan = off")
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        for statement, parameters in seen:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(explain + statement,
                                                                      parameters))
            assert "ix_sync_runs_history" in plan, (statement, plan)


# -- pipeline level: full run, 300 login runs, a shrunk full extract ----------------------------------
FAST = HttpSettings(timeout=5.0, connect_timeout=2.0, retries=2, backoff_factor=0.001,
                    backoff_max=0.004, retries_500=1, retry_max_wait=5.0)
ALL = parse_rules("scope: {mode: all}")


@pytest.fixture(scope="module")
def idcs_server() -> Iterator[tuple[Any, str]]:
    app = create_idcs_app()
    with serving(app) as running:
        yield app, running.base_url


def full_extract(store: AuditStore, idcs: tuple[Any, str], run_id: str) -> dict[str, int]:
    pipeline.start(store, run_id, dag_id=SYNC, trigger="manual", mode="full", dry_run=False,
                   rules_hash="x")
    mode, since = pipeline.resolve_mode(store, run_id, "full", DAY)
    store.update_run(run_id, mode=mode, watermark=since)
    client = IdcsClient(idcs[1], DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, settings=FAST,
                        sleep=lambda _: None)
    return pipeline.extract(store, run_id, client, ALL, None)


def test_shrunk_full_extract_after_300_login_runs_finds_its_baseline(
        store: AuditStore, idcs_server: tuple[Any, str]) -> None:
    app, _ = idcs_server
    org = generate_idcs_org(16, 80, 6)
    app.state.emulator.load_dict(org)

    before = pipeline.utcnow()
    counts = full_extract(store, idcs_server, "full-1")
    users = counts["users"]
    first = store.get_run("full-1")
    assert first is not None and users > 20
    assert first["users_in_scope"] == users == first["counts"]["extract"]["users"]
    assert first["data_as_of"] is not None
    assert pipeline._aware(first["data_as_of"]) >= before
    assert first["watermark"] is None and first["failed_streak"] is None
    pipeline.check_quality(store, "full-1")  # the first run: nothing to compare with
    store.update_run("full-1", status="succeeded", ended_at=pipeline.utcnow())

    start = pipeline._aware(first["started_at"]) + MINUTE
    add(store, logins(300, start))

    # The tenant loses 60% of its users; the next full run extracts what is left.
    org["users"] = org["users"][: len(org["users"]) * 2 // 5]
    app.state.emulator.load_dict(org)
    shrunk = full_extract(store, idcs_server, "full-2")["users"]
    assert shrunk < users * 0.5
    second = store.get_run("full-2")
    assert second is not None and second["users_in_scope"] == shrunk

    previous = pipeline.last_successful_run(store, "full-2")
    assert previous is not None
    assert (previous["run_id"], previous["users_in_scope"]) == ("full-1", users)
    assert previous_users(store, "full-2") == (users, "full-1")
    snapshot = store.get_artifact("full-2", pipeline.SNAPSHOT)
    reason = pipeline.safety_gate(ALL, Plan([], {}, []), users, snapshot, previous,
                                  pipeline.RunOptions())
    assert reason is not None and f"shrank from {users} to {shrunk}" in reason
    with pytest.raises(CriticalDataQualityError, match=f"{users} rows at the last successful"):
        pipeline.check_quality(store, "full-2")  # the data-quality shrink check sees it too

    # A retried extract starts the data's clock again.
    again = store.get_run("full-2")
    full_extract(store, idcs_server, "full-2")
    retried = store.get_run("full-2")
    assert again is not None and retried is not None
    assert retried["data_as_of"] > again["data_as_of"]


def test_a_full_run_that_left_identities_to_newer_runs_is_still_the_baseline(
        store: AuditStore) -> None:
    """Overlapping on-login runs often take a few users from a full run ('superseded'); that
    run still applied everything it kept, so it stays the baseline and the watermark."""
    add(store, row("full-1", T0, users_in_scope=50),
        row("full-2", T0 + HOUR, status="superseded", users_in_scope=60),
        row("waiting", T0 + 2 * HOUR, status="awaiting_approval"),
        row("failed", T0 + 3 * HOUR, status="failed"))
    assert history.shrink_baseline(store, SYNC) == (60, "full-2")
    assert history.failed_streak(store, SYNC) == 1  # a run waiting for approval ends nothing
