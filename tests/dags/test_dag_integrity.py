"""Every DAG imports cleanly, is tagged, retries, and is wired the way the design says."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "idcs_bitbucket_sync" in dagbag.dag_ids


def test_every_dag_is_tagged_and_retries(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.default_args.get("retries", 0) >= 2, f"{dag_id} does not retry"
        assert dag.catchup is False


def test_sync_dag_structure(dagbag) -> None:
    dag = dagbag.get_dag("idcs_bitbucket_sync")
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert downstream["start_run"] == ["check_data_quality", "extract_idcs", "finish_run",
                                       "map_to_bitbucket", "plan_sync", "read_bitbucket"]
    assert downstream["extract_idcs"] == ["check_data_quality"]
    assert downstream["check_data_quality"] == ["map_to_bitbucket"]
    assert downstream["plan_sync"] == ["additions_batches", "approve_plan", "groups_batches",
                                       "removals_batches", "users_batches"]
    assert downstream["approve_plan"] == ["additions_batches", "groups_batches",
                                          "removals_batches", "users_batches"]
    assert downstream["users_batches"] == ["apply_users"]
    assert downstream["apply_groups"] == ["apply_users"]
    assert downstream["apply_users"] == ["apply_removals"]
    assert downstream["apply_removals"] == ["apply_additions"]
    assert downstream["apply_additions"] == ["finish_run"]
    assert downstream["finish_run"] == []
    approval = dag.get_task("approve_plan")
    assert type(approval).__name__ == "PlanApprovalOperator"
    assert approval.plan_task_id == "plan_sync" and approval.retries == 0


def test_login_dag_waits_for_approval_between_prepare_and_apply(dagbag) -> None:
    dag = dagbag.get_dag("idcs_bitbucket_login_sync")
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert downstream == {"prepare": ["apply", "approve_plan"], "approve_plan": ["apply"],
                          "apply": ["finish"], "finish": []}
    assert dag.get_task("approve_plan").plan_task_id == "prepare"


def test_apply_tasks_are_mapped_pooled_and_fail_fast_on_permanent_errors(dagbag) -> None:
    dag = dagbag.get_dag("idcs_bitbucket_sync")
    for task_id in ("apply_groups", "apply_users", "apply_removals", "apply_additions"):
        task = dag.get_task(task_id)
        assert type(task).__name__.endswith("MappedOperator")
        assert task.pool == "bitbucket_api"
        assert task.retries >= 3
        assert task.map_index_template == "{{ batch_label }}"
    quality = dag.get_task("check_data_quality")
    assert quality.retries == 0  # a data-quality failure needs a human, not a retry
    assert dag.get_task("finish_run").trigger_rule == "all_done"


def test_params_are_typed(dagbag) -> None:
    params = dagbag.get_dag("idcs_bitbucket_sync").params
    assert params.get_param("dry_run").schema["type"] == "boolean"
    assert "approve_deprovisioning" not in params  # approval is a task, by a named approver
