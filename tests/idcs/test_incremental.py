"""Full and incremental extracts through the pipeline stage, into a real audit store: the
snapshot ids per run, deletions by id diff against the last full snapshot (listing every id only
when the counts say something is gone), and the stored request metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from identity_sync import pipeline
from identity_sync.audit.store import AuditStore
from identity_sync.mapping.rules import SyncRules, parse_rules

from .conftest import Idcs

USERS = "GET /admin/v1/Users"
SINCE = "2030-01-01T00:00:00.000Z"
LATER = "2031-06-01T12:00:00.000Z"


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    return AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")


def run(store: AuditStore, idcs: Idcs, rules: SyncRules, run_id: str,
        since: str | None = None) -> dict[str, Any]:
    pipeline.start(store, run_id, dag_id="idcs_bitbucket_sync", trigger="manual",
                   mode="incremental" if since else "full", dry_run=False, rules_hash="t")
    pipeline.extract(store, run_id, idcs.client(), rules, None, since=since)
    record = store.extract_record(run_id)
    assert record is not None
    return record


def edit(idcs: Idcs, *, rename: int | None = None, delete: int | None = None,
         retype: int | None = None) -> dict[str, Any]:
    """Change the tenant as an admin would: a changed user gets a new meta.lastModified."""
    state = idcs.dump()
    users = state["users"]
    if rename is not None:
        users[rename]["displayName"] += " (renamed)"
        users[rename]["meta"]["lastModified"] = LATER
    if retype is not None:
        users[retype]["userType"] = "Employee"
        users[retype]["meta"]["lastModified"] = LATER
    if delete is not None:
        del users[delete]
    idcs.seed(state)
    return state


ALL = parse_rules("scope: {mode: all}")


def test_full_extract_records_ids_and_metrics_matching_the_server(idcs: Idcs,
                                                                    store: AuditStore) -> None:
    idcs.control("DELETE", "calls")
    record = run(store, idcs, ALL, "full-1")
    server_calls = sum(idcs.control("GET", "calls").values())
    assert record["requests"] == server_calls == 3
    assert sum(e["requests"] for e in record["endpoints"].values()) == record["requests"]
    assert record["endpoints"][USERS]["pages"] == 1 and record["bytes"] > 0
    assert (record["mode"], record["listing"], record["users_seen"]) == ("full", "all", 60)
    assert record["membership_strategy"] == "user_side"
    assert store.known_user_ids("all") == ("full-1", {u["id"] for u in idcs.dump()["users"]})
    counts = store.get_run("full-1")["counts"]["extract"]
    assert counts["requests"] == 3 and counts["retries"] == 0


def test_incremental_finds_changes_and_deletions_by_id_diff(idcs: Idcs,
                                                            store: AuditStore) -> None:
    run(store, idcs, ALL, "full-1")
    before = idcs.dump()["users"]
    renamed, deleted = before[3], before[7]
    store.save_anchors("full-1", {deleted["id"]: "gone.user", renamed["id"]: "renamed.user"})
    edit(idcs, rename=3, delete=7)

    record = run(store, idcs, ALL, "inc-1", since=SINCE)
    snapshot = store.get_artifact("inc-1", pipeline.SNAPSHOT)
    assert [u["id"] for u in snapshot["users"]] == [renamed["id"]]
    assert store.get_artifact("inc-1", pipeline.SUBSET)["users"] == sorted(
        ["gone.user", renamed["userName"]])
    assert record["deleted"] == 1 and record["since"] == SINCE
    assert record["endpoints"][USERS]["requests"] == 3  # changed, count, then every id

    _, known = store.known_user_ids("all")
    assert deleted["id"] not in known and renamed["id"] in known and len(known) == 59


def test_incremental_with_nothing_deleted_skips_the_id_listing(idcs: Idcs,
                                                               store: AuditStore) -> None:
    run(store, idcs, ALL, "full-1")
    edit(idcs, rename=5)
    record = run(store, idcs, ALL, "inc-1", since=SINCE)
    assert record["deleted"] == 0 and record["users_in_scope"] == 1
    assert record["endpoints"][USERS]["requests"] == 2  # changed users, then one count
    quiet = run(store, idcs, ALL, "inc-2", since=LATER)
    assert quiet["users_in_scope"] == 0 and quiet["endpoints"][USERS]["requests"] == 2


def test_a_deletion_after_an_earlier_incremental_is_still_found(idcs: Idcs,
                                                                store: AuditStore) -> None:
    run(store, idcs, ALL, "full-1")
    edit(idcs, delete=0)
    assert run(store, idcs, ALL, "inc-1", since=SINCE)["deleted"] == 1
    edit(idcs, delete=0)
    assert run(store, idcs, ALL, "inc-2", since=SINCE)["deleted"] == 1  # only the new one
    assert len(store.known_user_ids("all")[1]) == 58


def test_filter_scope_user_leaving_the_filter_counts_as_gone(idcs: Idcs,
                                                             store: AuditStore) -> None:
    rules = parse_rules("""scope: {mode: filter, filter: 'userType eq "Contractor"'}""")
    run(store, idcs, rules, "full-1")
    users = idcs.dump()["users"]
    index = next(i for i, u in enumerate(users) if u["userType"] == "Contractor")
    store.save_anchors("full-1", {users[index]["id"]: "contractor"})
    edit(idcs, retype=index)
    record = run(store, idcs, rules, "inc-1", since=SINCE)
    assert record["listing"] == 'filter:userType eq "Contractor"' and record["deleted"] == 1
    assert "contractor" in store.get_artifact("inc-1", pipeline.SUBSET)["users"]


def test_incremental_without_a_baseline_lists_every_id(idcs: Idcs, store: AuditStore) -> None:
    record = run(store, idcs, ALL, "inc-1", since=SINCE)
    assert record["endpoints"][USERS]["requests"] == 2 and record["deleted"] == 0


def test_app_scope_incremental_uses_one_grants_listing(idcs: Idcs, store: AuditStore) -> None:
    from identity_sync.emulators.idcs import DEMO_APP_ID

    rules = parse_rules("scope: {mode: app_grants}")
    pipeline.start(store, "full-1", dag_id="d", trigger="manual", mode="full", dry_run=False,
                   rules_hash="t")
    pipeline.extract(store, "full-1", idcs.client(), rules, DEMO_APP_ID)
    for i in range(4):
        edit(idcs, rename=i)
    pipeline.start(store, "inc-1", dag_id="d", trigger="manual", mode="incremental",
                   dry_run=False, rules_hash="t")
    pipeline.extract(store, "inc-1", idcs.client(), rules, DEMO_APP_ID, since=SINCE)
    record = store.extract_record("inc-1")
    assert record["endpoints"]["GET /admin/v1/Grants"]["requests"] == 1
    assert record["app_id"] == DEMO_APP_ID


def test_membership_side_comes_from_the_rules(idcs: Idcs, store: AuditStore) -> None:
    rules = parse_rules("scope: {mode: all, memberships: group_side}\ngroups: {include: [A*]}")
    record = run(store, idcs, rules, "full-1")
    wanted = [g for g in idcs.dump()["groups"] if g["displayName"].lower().startswith("a")]
    assert record["membership_strategy"] == "group_side"
    assert record["endpoints"]["GET /admin/v1/Groups/{id}"]["requests"] == len(wanted) > 0


def test_extract_records_are_pruned_with_their_run(idcs: Idcs, store: AuditStore) -> None:
    from datetime import timedelta

    from identity_sync.audit.store import utcnow

    run(store, idcs, ALL, "full-1")
    store.update_run("full-1", status="succeeded", ended_at=utcnow() - timedelta(days=40))
    assert store.extract_history()[0]["run_id"] == "full-1"
    deleted = store.prune(older_than_days=30)
    assert deleted["idcs_extracts"] == 1 and deleted["idcs_user_ids"] == 60
    assert deleted["idcs_extract_endpoints"] == 3
    assert store.extract_record("full-1") is None and store.known_user_ids("all") is None
