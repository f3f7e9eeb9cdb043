"""The Great Expectations gate: suites from files, quarantine with reasons, critical stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity_sync.model import IdcsUser
from identity_sync.quality.gate import check_users, load_suite


def u(uid: str | None, name: str | None, email: str | None = "x@example.com") -> IdcsUser:
    return IdcsUser(uid, name, "Display", "G", "F", email, True)


@pytest.fixture(scope="module")
def gate_result():
    users = [u("1", "alice", "alice@example.com"), u("2", "Bob", "bob@example.com"),
             u("3", "bob", "bob2@example.com"), u(None, "nobody"), u("5", "eve", "not-an-email"),
             u("6", "frank", None), u("7", None)]
    return check_users(users)


def test_record_failures_are_quarantined_with_reason_and_value(gate_result) -> None:
    by_id = {q["record_id"]: q for q in gate_result.quarantined}
    assert set(by_id) == {"2", "3", "row-3:nobody", "5", "6", "7"}
    assert by_id["5"]["expectation"] == "expect_column_values_to_match_regex(email)"
    assert by_id["5"]["value"] == "not-an-email"
    assert by_id["2"]["expectation"] == "expect_column_values_to_be_unique(user_name_key)"
    assert by_id["2"]["value"] == "bob"
    assert "1" not in by_id


def test_outcomes_recorded_per_expectation(gate_result) -> None:
    rows = {r["expectation"]: r for r in gate_result.rows_for_audit()}
    assert rows["expect_column_values_to_be_unique(id)"]["success"] is True
    assert rows["expect_column_values_to_not_be_null(email)"]["unexpected_count"] == 1
    assert rows["expect_column_values_to_not_be_null(id)"]["severity"] == "record"
    assert gate_result.critical_failures == []


def test_duplicate_ids_are_critical() -> None:
    result = check_users([u("1", "a"), u("1", "b")])
    assert [o.expectation for o in result.critical_failures] == [
        "expect_column_values_to_be_unique(id)"]


def test_empty_extract_is_critical() -> None:
    result = check_users([])
    assert [o.expectation for o in result.critical_failures] == [
        "expect_table_row_count_to_be_between"]


def test_suite_with_unknown_severity_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"name": "bad", "expectations": [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"},
         "meta": {"severity": "fatal"}}]}))
    with pytest.raises(ValueError, match="severity 'fatal'"):
        load_suite("bad", tmp_path)
