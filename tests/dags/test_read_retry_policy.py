"""The read tasks' retry policy: an IDCS listing that changed while it was read is transient
(retried, with the task's own exponential backoff), a genuinely partial extract fails at once.
Rules match in order and ListingChangedError subclasses PartialExtractError, so order matters."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk import ExceptionRetryPolicy, RetryAction

from identity_sync.idcs.client import IdcsApiError, ListingChangedError, PartialExtractError
from identity_sync_airflow.tasks import READ_RETRY_POLICY

DAGS = Path(__file__).resolve().parents[2] / "dags"
CHANGED = ListingChangedError("IDCS /admin/v1/Users totalResults changed from 60 to 61")
PARTIAL = PartialExtractError("IDCS /admin/v1/Users stopped at 10 of 25 results")


@pytest.mark.parametrize("policy", [
    READ_RETRY_POLICY, ExceptionRetryPolicy.deserialize(READ_RETRY_POLICY.serialize())],
    ids=["as_defined", "serialized"])
def test_a_changed_listing_is_retried_and_a_partial_one_fails(
        policy: ExceptionRetryPolicy) -> None:
    changed = policy.evaluate(CHANGED, try_number=1, max_tries=4)
    assert changed.action == RetryAction.RETRY
    assert changed.retry_delay is None  # the task's own exponential backoff, not a fixed delay
    assert "changed" in (changed.reason or "")
    assert policy.evaluate(PARTIAL, try_number=1, max_tries=4).action == RetryAction.FAIL
    # other API trouble keeps Airflow's default handling (the client already retried it)
    api = IdcsApiError(503, "gave up", "GET", "/admin/v1/Users")
    assert policy.evaluate(api, try_number=1, max_tries=4).action == RetryAction.DEFAULT


def test_the_retry_rule_comes_before_the_partial_extract_fail_rule() -> None:
    paths = [rule.exception_path for rule in READ_RETRY_POLICY.rules]
    changed = next(i for i, p in enumerate(paths) if p.endswith(".ListingChangedError"))
    partial = next(i for i, p in enumerate(paths) if ".PartialExtractError" in p)
    assert changed < partial


def test_the_extract_task_carries_the_policy_and_has_retries_left(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS)).get_dag("idcs_bitbucket_sync")
    extract = dag.get_task("extract_idcs")
    assert extract.retry_policy is READ_RETRY_POLICY
    assert extract.retries >= 2 and extract.retry_exponential_backoff
