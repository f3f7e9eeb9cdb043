"""Two corpus cases through the whole DAG (``dag.test()``, both emulators on real sockets)."""

from __future__ import annotations

import copy

import pytest

from identity_sync.audit.store import AuditStore
from tests.e2e.conftest import Live, live  # noqa: F401  (the fixture)
from tests.e2e.test_sync_dag import actual_state, assert_in_step, expected_state

pytestmark = pytest.mark.e2e


def test_page_that_is_not_json_stops_the_run_before_bitbucket(live: Live) -> None:  # noqa: F811
    live.idcs_app.state.corruptions.configure(
        {"page_cap": 50, "rules": [{"kind": "not_json", "start_index": 51}]})
    run = live.run_dag()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["extract_idcs"] == "failed"
    assert states["check_data_quality"] == "upstream_failed"
    assert actual_state(live)[0] == {}  # nothing written
    store = AuditStore(live.audit_url)
    assert store.plan(run.run_id) == []
    with pytest.raises(KeyError):
        store.get_artifact(run.run_id, "idcs_snapshot")
    assert str(run.state) == "failed"
    record = store.get_run(run.run_id)
    assert record["status"] == "failed"
    assert record["message"].startswith("extract_idcs failed: ")


def test_case_duplicate_usernames_are_quarantined_and_the_rest_syncs(live: Live) -> None:  # noqa: F811
    dump = copy.deepcopy(live.idcs_dump())
    names = sorted(expected_state(dump)[0])
    by_name = {u["userName"].lower(): u for u in dump["users"]}
    first, second = by_name[names[0]], by_name[names[1]]
    second["userName"] = first["userName"].upper()
    live.load_idcs(dump)

    run = live.run_dag()
    assert str(run.state) == "success"
    assert_in_step(live)  # everybody else, with their groups
    got = actual_state(live)[0]
    assert names[0] not in got and second["userName"].lower() not in got
    store = AuditStore(live.audit_url)
    held = {q["record_id"]: q for q in store.quarantined(run.run_id)}
    for user in (first, second):
        assert "unique case-insensitively" in held[user["id"]]["reason"]
