"""Severity policy from the suite files, the shrink baseline, storage, Data Docs and retries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync.mapping.rules import load_rules
from identity_sync.model import DesiredState, DesiredUser, IdcsGroup, IdcsSnapshot, IdcsUser
from identity_sync.quality.baseline import previous_users
from identity_sync.quality.gate import (
    SUITES_DIR,
    CriticalDataQualityError,
    check_users,
    load_suite,
)

SUITES = ("idcs_users", "idcs_groups", "idcs_memberships", "desired_users", "desired_groups")


def user(uid: str, name: str, email: str | None = None, groups: tuple[str, ...] = ("g1",)
         ) -> IdcsUser:
    return IdcsUser(uid, name, name.title(), "G", "F", email or f"{name}@example.com", True,
                    group_ids=groups)


@pytest.mark.parametrize("name", SUITES)
def test_every_shipped_suite_loads_with_a_severity_and_a_reason(name: str) -> None:
    suite = load_suite(name)
    assert suite["name"] == name
    assert all(e["meta"]["why"] for e in suite["expectations"])


def test_severity_is_changed_in_the_suite_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    users = [user("1", "a", "not-an-email"), user("2", "b")]
    assert [q["record_id"] for q in check_users(users).quarantined] == ["1"]
    for name in SUITES:
        shutil.copy(SUITES_DIR / f"{name}.json", tmp_path)
    path = tmp_path / "idcs_users.json"
    suite = json.loads(path.read_text())
    for exp in suite["expectations"]:
        if exp["type"] == "expect_column_values_to_match_regex":
            exp["meta"]["severity"] = "critical"
    path.write_text(json.dumps(suite))
    monkeypatch.setenv("IDSYNC_EXPECTATIONS_DIR", str(tmp_path))
    result = check_users(users)
    assert result.quarantined == []
    assert [o.expectation for o in result.critical_failures] == [
        "expect_column_values_to_match_regex(email)"]


def test_duplicate_labels_are_refused(tmp_path: Path) -> None:
    exp = {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"},
           "meta": {"severity": "record"}}
    (tmp_path / "dup.json").write_text(json.dumps({"name": "dup", "expectations": [exp, exp]}))
    with pytest.raises(ValueError, match=r"give one a meta\.name"):
        load_suite("dup", tmp_path)


def test_shrink_check_uses_the_baseline_and_its_threshold() -> None:
    users = [user(str(i), f"u{i}") for i in range(5)]
    label = "row count vs last successful run"
    skipped = {o.expectation: o for o in check_users(users).outcomes}[label]
    assert skipped.success and skipped.sample == ["skipped: no earlier successful full run"]
    ok = {o.expectation: o for o in check_users(users, baseline=10).outcomes}[label]
    assert ok.success  # 50% smaller is still allowed
    failed = check_users(users, baseline=11).critical_failures
    assert [o.expectation for o in failed] == [label]
    assert failed[0].observed == 5
    assert "11 rows at the last successful run" in failed[0].reason()


def _run(store: AuditStore, run_id: str, users: int, *, status: str = "succeeded",
         dag_id: str = "idcs_bitbucket_sync", dry_run: bool = False, mode: str = "full") -> None:
    store.start_run(run_id, dag_id=dag_id, trigger="manual", mode=mode, dry_run=dry_run,
                    rules_hash="x")
    store.update_run(run_id, status=status, counts={"extract": {"users": users}})


def test_baseline_is_the_last_successful_full_run_of_the_same_dag(tmp_path: Path) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'a.db'}")
    _run(store, "good", 100)
    _run(store, "failed", 3, status="failed")
    _run(store, "dry", 4, dry_run=True)
    _run(store, "other-dag", 5, dag_id="idcs_bitbucket_login_sync")
    _run(store, "subset", 6, mode="subset")
    _run(store, "incremental", 7, mode="incremental")
    _run(store, "now", 0, status="running")
    assert previous_users(store, "now") == (100, "good")
    _run(store, "part", 0, status="running", mode="subset")
    assert previous_users(store, "part") is None


def _stored_run(tmp_path: Path, snapshot: IdcsSnapshot) -> AuditStore:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    store.start_run("r1", dag_id="d", trigger="manual", mode="full", dry_run=False,
                    rules_hash="x")
    store.put_artifact("r1", pipeline.SNAPSHOT, snapshot.to_dict(), len(snapshot.users))
    return store


def test_results_quarantine_and_data_docs_are_stored(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDSYNC_DATA_DOCS_DIR", str(tmp_path / "docs"))
    snapshot = IdcsSnapshot([user("1", "a"), user("2", "b", groups=("g1", "gone"))],
                            [IdcsGroup("g1", "One"), IdcsGroup("g2", "")], "all users")
    store = _stored_run(tmp_path, snapshot)
    summary = pipeline.check_quality(store, "r1")
    assert summary["quarantined"] == 2
    held = {(q["record_type"], q["record_id"]): q for q in store.quarantined("r1")}
    assert held.keys() == {("group", "g2"), ("membership", "2 in gone")}
    assert held[("membership", "2 in gone")]["value"] == "False"
    rows = {(r["suite"], r["expectation"]): r for r in store.dq("r1")}
    assert {s for s, _ in rows} == {"idcs_users", "idcs_groups", "idcs_memberships"}
    assert rows[("idcs_groups", "expect_column_values_to_not_be_null(display_name)")][
        "unexpected_count"] == 1
    pages = sorted(p.name for p in (tmp_path / "docs" / "r1").iterdir())
    assert pages == ["idcs_groups.html", "idcs_memberships.html", "idcs_users.html"]
    assert "Great Expectations" in (tmp_path / "docs" / "r1" / "idcs_users.html").read_text()


def test_critical_failure_marks_the_run_failed_with_one_line(tmp_path: Path) -> None:
    store = _stored_run(tmp_path, IdcsSnapshot([], [IdcsGroup("g1", "One")], "all users"))
    with pytest.raises(CriticalDataQualityError) as err:
        pipeline.check_quality(store, "r1")
    run = store.get_run("r1")
    assert run["status"] == "failed" and run["message"] == str(err.value)
    assert "\n" not in run["message"] and "an empty extract" in run["message"]


def test_desired_check_filters_the_artifact_and_is_safe_to_repeat(tmp_path: Path) -> None:
    rules = load_rules()[0]
    snapshot = IdcsSnapshot([user("1", "a"), user("2", "b")],
                            [IdcsGroup("g1", "Dev Ops"), IdcsGroup("g2", "dev-ops")], "all")
    store = _stored_run(tmp_path, snapshot)
    desired = DesiredState(
        {"1": DesiredUser("1", "a", "A", "a@example.com", True),
         "2": DesiredUser("2", "b/c", "B", "b@example.com", True)},
        ["bitbucket-users", "dev-ops"], {"bitbucket-users": ["a", "b/c"], "dev-ops": ["a"]},
        {"bitbucket-users": "LICENSED_USER"})
    store.put_artifact("r1", pipeline.DESIRED, desired.to_dict(), 2)
    for _ in range(2):  # a retried task gives the same answer
        pipeline.check_desired_quality(store, "r1", rules)
        checked = DesiredState.from_dict(store.get_artifact("r1", pipeline.DESIRED))
        assert set(checked.users) == {"1"}
        assert checked.memberships == {"bitbucket-users": ["a"]}
        assert checked.managed_groups == ["bitbucket-users"]
        held = {(q["record_type"], q["record_id"]) for q in store.quarantined("r1")}
        assert held == {("user", "2"), ("group", "g1"), ("group", "g2")}
        failed = {r["expectation"] for r in store.dq("r1") if not r["success"]}
        assert failed == {"expect_column_values_to_match_regex(name)",
                          "expect_column_values_to_be_unique(name_key)"}
