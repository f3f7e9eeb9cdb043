"""Applying plan operations against the Bitbucket emulator on a real socket: idempotency,
attempt records, anchors, and partial failures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings
from identity_sync.loading.apply import BatchResult, PermanentApplyError, apply_batch
from identity_sync.planning.operations import Operation, OpKind, assign_batches


@pytest.fixture
def bitbucket() -> Iterator[tuple[BitbucketClient, Any]]:
    app = create_bitbucket_app()
    with serving(app) as server:
        client = BitbucketClient(server.base_url, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                                 settings=HttpSettings(retries=0))
        yield client, app.state.emulator


@pytest.fixture
def store(tmp_path) -> AuditStore:
    return AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")


def plan(store: AuditStore, *ops: Operation) -> list[Operation]:
    assign_batches(list(ops), batch_size=100, max_batches=10)
    store.record_plan("r1", list(ops))
    return list(ops)


def run(store: AuditStore, client: BitbucketClient, phase: str) -> BatchResult:
    return apply_batch(store, client, "r1", phase, 0)


def create(name: str, idcs_id: str) -> Operation:
    return Operation(OpKind.CREATE_USER, name, {"name": name, "displayName": name.title(),
                                                "email": f"{name}@x.io"}, "new", idcs_id=idcs_id)


def test_creates_then_rerun_is_a_no_op(bitbucket, store) -> None:
    client, _ = bitbucket
    plan(store, create("alice", "u1"), create("bob", "u2"))
    first = run(store, client, "users")
    assert (first.done, first.failed) == (2, 0)
    assert {u["name"] for u in client.list_users()} >= {"alice", "bob"}
    assert store.anchors() == {"u1": "alice", "u2": "bob"}
    again = run(store, client, "users")  # a cleared task
    assert (again.done, again.already_done) == (0, 2)
    assert [a["attempt"] for a in store.attempts("r1")] == [1, 1]


def test_existing_user_counts_as_created_and_is_converged(bitbucket, store) -> None:
    client, _ = bitbucket
    client.create_user("alice", "Stale", "old@x.io")  # a create that landed before a timeout
    plan(store, create("alice", "u1"))
    result = run(store, client, "users")
    assert result.done == 1
    attempt = store.attempts("r1")[0]
    assert attempt["http_status"] == 409 and attempt["error"].startswith("treated as done")
    alice = client.find_user("ALICE")
    assert (alice["displayName"], alice["emailAddress"]) == ("Alice", "alice@x.io")


def test_add_members_isolates_a_missing_user(bitbucket, store) -> None:
    client, _ = bitbucket
    client.create_group("devs")
    client.create_user("alice", "Alice", "a@x.io")
    client.create_user("carol", "Carol", "c@x.io")
    plan(store, Operation(OpKind.ADD_MEMBERS, "devs",
                          {"group": "devs", "users": ["alice", "ghost", "carol"]}, "member"))
    result = run(store, client, "additions")
    assert result.failed == 1 and not result.transient
    assert "ghost" in result.errors[0]
    assert {m["name"] for m in client.group_members("devs")} == {"alice", "carol"}
    with pytest.raises(PermanentApplyError, match="1 of 1 operations"):
        result.raise_for_failures("add 3 → devs")
    attempt = store.attempts("r1")[0]
    assert (attempt["outcome"], attempt["http_status"]) == ("failed", 404)


def test_removals_of_what_is_already_gone_are_done(bitbucket, store) -> None:
    client, _ = bitbucket
    client.create_group("devs")
    plan(store,
         Operation(OpKind.REMOVE_MEMBERSHIP, "ghost", {"user": "ghost", "group": "devs"}, "x"),
         Operation(OpKind.DELETE_USER, "ghost", {"name": "ghost"}, "x", idcs_id="u9"))
    store.save_anchors("r0", {"u9": "ghost"})
    result = run(store, client, "removals")
    assert (result.done, result.failed) == (2, 0)
    assert store.anchors() == {}


def test_superseded_plan_writes_nothing(bitbucket, store) -> None:
    client, _ = bitbucket
    plan(store, create("alice", "u1"))
    result = apply_batch(store, client, "r1", "users", 0, superseded_by="r2")
    assert result.superseded == 1
    assert client.find_user("alice") is None
    assert store.plan("r1")[0]["status"] == "superseded"
