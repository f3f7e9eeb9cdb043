"""Circuit breaker: a 5xx storm or refused credentials stop the writes at once, with one
readable reason, instead of hammering Bitbucket; consecutive failed runs are counted."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from identity_sync.emulators.orggen import generate_idcs_org
from identity_sync.http import ApiError
from identity_sync.loading.breaker import (
    BREAKER_OPEN,
    BreakerSettings,
    CircuitBreaker,
)

from .conftest import FAST, Env

ORG = generate_idcs_org(21, 150, 12)


def api_error(status: int | None, exception_name: str = "") -> ApiError:
    err = ApiError("Bitbucket", status, "refused")
    err.exception_name = exception_name  # type: ignore[attr-defined]
    return err


def test_breaker_thresholds() -> None:
    bad_password = CircuitBreaker()
    assert bad_password.failure(api_error(
        401, "com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"))
    assert "credentials" in (bad_password.reason or "")

    storm = CircuitBreaker(BreakerSettings(max_consecutive_failures=3))
    assert storm.failure(api_error(503)) is None
    storm.success()  # a success in between resets the streak
    assert [storm.failure(api_error(s)) is None for s in (503, None, 502)] == [True, True, False]
    assert storm.reason == f"{BREAKER_OPEN}: 3 operations in a row failed (2× 503, 1× no " \
                           "answer, 1× 502); Bitbucket looks unavailable"

    rate = CircuitBreaker(BreakerSettings(max_failure_percent=20, min_operations=10,
                                          max_consecutive_failures=99))
    for n in range(10):
        rate.success() if n % 3 else rate.failure(api_error(500))
    assert rate.open and "4 of 10 operations failed (40%, limit 20%" in (rate.reason or "")

    lacking = CircuitBreaker(BreakerSettings(max_auth_failures=2, max_consecutive_failures=99))
    lacking.failure(api_error(401, "com.atlassian.bitbucket.AuthorisationException"))
    lacking.success()
    assert lacking.failure(api_error(401, "com.atlassian.bitbucket.AuthorisationException"))
    assert "2 operations refused with 401" in (lacking.reason or "")


def storm(env: Env) -> None:
    env.control("bitbucket", "DELETE", "responses")
    env.control("bitbucket", "PUT", "faults", json={"error_rate": 1.0, "error_statuses": [503]})


def test_5xx_storm_stops_the_run_with_one_reason_then_a_clear_completes(
        make_env: Any) -> None:
    env: Env = make_env(ORG)
    result = env.run("storm", before_apply=lambda: storm(env), task_retries=3)
    answered = env.control("bitbucket", "GET", "responses")["responses"]
    env.control("bitbucket", "PUT", "faults", json={})

    assert result.status == "failed"
    assert len(result.apply_errors) == 1  # the first phase stopped, nothing after it ran
    reason = result.apply_errors[0]
    assert "circuit breaker open: 5 operations in a row failed (5× 503)" in reason
    # 5 operations, each sent once and retried FAST.retries times, then nothing more
    assert answered == {"503": 5 * (FAST.retries + 1)}
    plan = env.store.plan("storm")
    assert all(op["status"] == "failed" for op in plan)
    not_sent = [a for a in env.store.attempts("storm")
                if a["error"].startswith("not attempted: circuit breaker open")]
    groups = [op for op in plan if op["phase"] == "groups"]
    assert len(not_sent) == len(groups) - 5  # the rest of the first batch; later ones never ran
    assert "operations not done (" in (result.message or "")

    healed = env.clear_and_rerun("storm")
    assert healed.status == "succeeded" and env.divergence("storm") == []


def test_refused_credentials_stop_after_one_request(make_env: Any) -> None:
    env: Env = make_env(ORG)

    def password_changed() -> None:
        env.bb_state.find_user("sync-admin").password = "rotated-elsewhere"
        env.control("bitbucket", "DELETE", "writes")

    result = env.run("creds", before_apply=password_changed)
    assert result.status == "failed"
    assert "refused the service account's credentials" in result.apply_errors[0]
    writes = env.writes()
    assert len(writes) == 1 and writes[0]["status"] == 401  # one try, then the breaker


def test_failure_callback_says_how_many_runs_failed_in_a_row(
        make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from identity_sync_airflow import tasks

    env: Env = make_env(ORG)
    store = env.store
    for n, status in enumerate(["succeeded", "failed", "blocked"]):
        store.start_run(f"r{n}", dag_id=tasks.SYNC_DAG_ID, trigger="scheduled", mode="full",
                        dry_run=False, rules_hash="x")
        store.update_run(f"r{n}", status=status)
    store.start_run("r3", dag_id=tasks.SYNC_DAG_ID, trigger="scheduled", mode="full",
                    dry_run=False, rules_hash="x")
    store.update_run("r3", status="applying")
    monkeypatch.setattr(tasks, "_store", lambda: store)

    class TaskInstance:
        dag_id, task_id = tasks.SYNC_DAG_ID, "apply_users"

    lines: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(tasks.__name__)  # its own handler: whatever Airflow did to root
    logger.addHandler(handler)
    try:
        tasks.on_failure({"ti": TaskInstance(), "run_id": "r3",
                          "exception": RuntimeError("circuit breaker open: 5 in a row")})
    finally:
        logger.removeHandler(handler)
    assert lines == ["identity sync idcs_bitbucket_sync.apply_users failed (run r3; 3 failed "
                     "runs in a row): circuit breaker open: 5 in a row"]
    run = store.get_run("r3")
    assert run["failed_streak"] == 3 and "failed_streak" not in (run["counts"] or {})
    assert run["message"] == "apply_users failed: circuit breaker open: 5 in a row"
