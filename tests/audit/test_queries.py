"""The questions admins ask, answered from a known two-run history on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from identity_sync.audit import queries as q

from .conftest import T0, T1, History

M = timedelta(minutes=1)


def test_runs_overview_counts_and_order(history: History) -> None:
    rows = q.runs_overview(history.store)
    assert [r["run_id"] for r in rows] == [history.r2, history.r1]
    r2, r1 = rows
    assert (r2["status"], r2["operations"], r2["done"], r2["failed"], r2["quarantined"]) == (
        "failed", 3, 2, 1, 0)
    assert (r1["status"], r1["operations"], r1["done"], r1["quarantined"]) == (
        "succeeded", 4, 4, 1)
    assert r1["started_at"] == T0 and r1["ended_at"] == T0 + 4 * M
    assert r1["rules_version"] == "7"
    assert len(q.runs_overview(history.store, limit=1)) == 1


@pytest.mark.parametrize("who", ["alice", "ALICE", "alice.smith", "u1"])
def test_user_timeline_follows_renames(history: History, who: str) -> None:
    ident, events = q.user_timeline(history.store, who)
    assert ident.idcs_ids == {"u1"}
    assert ident.names == {"alice", "alice.smith"}
    assert ident.current_name == "alice.smith"
    assert [(e["run_id"] == history.r1, e["event"], e["kind"]) for e in events] == [
        (True, "planned", "create_user"),
        (True, "planned", "add_members"),
        (True, "attempt 1", "create_user"),
        (True, "attempt 1", "add_members"),
        (False, "planned", "rename_user"),
        (False, "attempt 1", "rename_user"),
    ]
    times = [e["at"] for e in events]
    assert times == sorted(times) and times[0] == T0 + 2 * M and times[-1] == T1 + 3 * M
    add = events[1]
    assert add["after"] == {"group": "devs", "members": ["alice"]}  # not bob's part
    rename = events[-1]
    assert (rename["before"], rename["after"], rename["reason"]) == (
        {"name": "alice"}, {"name": "alice.smith"}, "userName changed in IDCS")


def test_user_timeline_membership_removal_and_quarantine(history: History) -> None:
    ident, events = q.user_timeline(history.store, "bob")
    assert ident.idcs_ids == {"u2"}
    kinds = [(e["event"], e["kind"]) for e in events]
    assert ("planned", "remove_membership") in kinds and ("attempt 1", "add_members") in kinds
    assert all(e["kind"] != "rename_user" for e in events)

    ident, events = q.user_timeline(history.store, "u3")
    assert [(e["event"], e["status"], e["http_status"]) for e in events] == [
        ("quarantined", "quarantined", None),
        ("planned", "failed", None),
        ("attempt 1", "failed", 503),
        ("attempt 2", "failed", 400),
    ]
    assert events[-1]["error"] == "emailAddress is invalid"
    assert ident.current_name is None  # never anchored: the create never succeeded


def test_user_timeline_of_a_stranger_is_empty(history: History) -> None:
    ident, events = q.user_timeline(history.store, "mallory")
    assert (ident.idcs_ids, events) == (set(), [])


def test_group_members_through_time(history: History) -> None:
    store = history.store
    with pytest.raises(LookupError, match="no Bitbucket state snapshot"):
        q.group_members_at(store, "devs", T0)
    before_apply = q.group_members_at(store, "devs", T0 + 2 * M)
    assert (before_apply["exists"], before_apply["members"]) == (False, [])
    after_apply = q.group_members_at(store, "devs", T0 + 3 * M)
    assert (after_apply["exists"], after_apply["members"]) == (True, ["alice", "bob"])
    assert after_apply["snapshot_run_id"] == history.r1
    assert [c["change"] for c in after_apply["changes_after_snapshot"]] == [
        "group created", "added alice, bob"]
    next_day = q.group_members_at(store, "Devs", T1 + 2 * M)  # case-insensitive
    assert next_day["snapshot_run_id"] == history.r2
    assert (next_day["group"], next_day["members"]) == ("DEVS", ["alice", "bob"])
    after_r2 = q.group_members_at(store, "devs", T1 + 3 * M)
    assert after_r2["members"] == ["alice.smith"]
    assert [c["change"] for c in after_r2["changes_after_snapshot"]] == [
        "renamed alice → alice.smith", "removed bob"]


def test_group_members_of_an_unread_group_are_unknown(history: History) -> None:
    history.store.put_artifact("r3", "bitbucket_state", {
        "users": [], "groups": ["stash-users", "devs", "legacy"], "memberships": {},
        "group_permissions": {}, "user_permissions": {}}, 0)
    answer = q.group_members_at(history.store, "legacy", T1 + 10 * M)
    assert (answer["exists"], answer["known"], answer["members"]) == (True, False, None)


def test_run_changes_groups_applied_ops_and_lists_failures(history: History) -> None:
    result = q.run_changes(history.store, history.r2)
    assert result["statuses"] == {"done": 2, "failed": 1}
    assert sorted(result["applied"]) == ["remove_membership", "rename_user"]
    assert result["applied"]["rename_user"][0]["after"] == {"name": "alice.smith"}
    assert result["applied"]["remove_membership"][0]["reason"] == (
        "not a member in IDCS: remove from devs")
    [failure] = result["failures"]
    assert (failure["target"], failure["http_status"], failure["attempts"], failure["error"]) == (
        "carol", 400, 2, "emailAddress is invalid")
    with pytest.raises(LookupError):
        q.run_changes(history.store, "nope")


def test_export_rows_one_per_attempt(history: History) -> None:
    rows = q.export_rows(history.store, history.r2)
    assert [(r["target"], r["attempt"], r["outcome"], r["http_status"]) for r in rows] == [
        ("alice", 1, "done", None), ("bob", 1, "done", None),
        ("carol", 1, "failed", 503), ("carol", 2, "failed", 400)]
    assert rows[0]["before"] == '{"name": "alice"}'
    assert rows[3]["attempted_at"] == T1 + 4 * M
