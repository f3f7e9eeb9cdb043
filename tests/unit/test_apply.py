"""Applying plan operations against the Bitbucket emulator on a real socket: idempotency,
attempt records, anchors, and partial failures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from identity_sync.audit import identity_state
from identity_sync.audit.store import AuditStore
from identity_sync.bitbucket.client import BitbucketClient
from identity_sync.emulators.bitbucket import (
    DEMO_ADMIN_PASSWORD,
    DEMO_ADMIN_USER,
    create_bitbucket_app,
)
from identity_sync.emulators.common import serving
from identity_sync.http import HttpSettings
from identity_sync.loading.apply import BatchResult, PermanentApplyError, apply_batch, lanes
from identity_sync.loading.breaker import BreakerSettings
from identity_sync.planning.lanes import annotate
from identity_sync.planning.operations import Operation, OpKind, assign_batches, batch_refs


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
    """409 on a create: done when the account is provably ours. Anchored to this IDCS user
    (a create of an earlier run that landed before a timeout): its details converge. With the
    same details (casefolded) and nothing else to go on: done, unchanged, anchored."""
    client, _ = bitbucket
    client.create_user("alice", "Stale", "old@x.io")
    client.create_user("bob", "BOB", "BOB@x.io")
    mine = create("alice", "u1")
    mine.params["ownership"] = {"adopt": "username_and_email", "anchored_to": "u1"}
    plan(store, Operation(OpKind.CREATE_USER, "alice", mine.params, "new", idcs_id="u1"),
         create("bob", "u2"))
    result = run(store, client, "users")
    assert (result.done, result.conflicts) == (2, 0)
    attempts = store.attempts("r1")
    assert all(a["http_status"] == 409 and a["error"].startswith("treated as done")
               for a in attempts)
    alice = client.find_user("ALICE")
    assert (alice["displayName"], alice["emailAddress"]) == ("Alice", "alice@x.io")
    assert store.anchors() == {"u1": "alice", "u2": "bob"}


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


# ---- licence limit, untouchable users, read-back, bisecting add-users ------------------------


@pytest.fixture
def served() -> Iterator[tuple[BitbucketClient, Any, str]]:
    """Client, emulator app and base URL (for the /_emulator controls)."""
    app = create_bitbucket_app()
    with serving(app) as server:
        client = BitbucketClient(server.base_url, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                                 settings=HttpSettings(retries=0))
        yield client, app, server.base_url


def add(group: str, *users: str, batch: int = 0) -> Operation:
    op = Operation(OpKind.ADD_MEMBERS, group, {"group": group, "users": list(users)}, "member")
    op.batch = batch
    return op


def test_licence_limit_stops_additions_and_says_how_many_seats(served, store) -> None:
    client, app, _ = served
    state = app.state.emulator
    for name in ("alice", "bob", "carol", "dave", "erin"):
        client.create_user(name, name.title(), f"{name}@x.io")  # unlicensed: no default group
    client.create_group("bitbucket-users")
    client.set_group_permission("bitbucket-users", "LICENSED_USER")
    client.create_group("devs")  # grants nothing: adding to it needs no seat
    state.license_limit = len(state.licensed_ids()) + 1  # one seat left
    ops = [add("devs", "alice"), add("bitbucket-users", "alice", "bob", "carol"),
           add("bitbucket-users", "dave"), add("bitbucket-users", "erin", batch=1)]
    store.record_plan("r1", ops)
    result = run(store, client, "additions")
    assert (result.done, result.failed) == (1, 2)
    assert result.licence_stop is not None
    # the refused add and the one it stopped: four users who hold no licence yet
    assert "4 licence seats missing for this batch" in result.licence_stop
    assert "alice, bob, carol, dave;" in result.licence_stop
    assert {m["name"] for m in client.group_members("devs")} == {"alice"}  # kept
    assert list(client.group_members("bitbucket-users")) == []
    with pytest.raises(PermanentApplyError, match="licence limit reached"):
        result.raise_for_failures("additions")
    attempts = {a["op_id"]: a for a in store.attempts("r1")}
    assert attempts[ops[1].op_id]["http_status"] == 403
    assert attempts[ops[2].op_id]["error"].startswith("not attempted, licence limit reached")
    later = apply_batch(store, client, "r1", "additions", 1)  # another task of the same run
    assert later.failed == 1 and later.licence_stop == attempts[ops[1].op_id]["error"]
    assert state.find_user("erin").id not in state.licensed_ids()


def test_service_account_and_read_only_users_are_refused_and_reported(served, store) -> None:
    client, app, _ = served
    client.create_group("devs")
    client.create_user("alice", "Alice", "a@x.io")
    store.put_artifact("r1", "bitbucket_state", {"users": [
        {"name": "ldap.jo", "display_name": "Jo", "email": "j@x.io",
         "directory": "Corp LDAP", "mutable": False}]}, 1)
    ops = [Operation(OpKind.UPDATE_USER, DEMO_ADMIN_USER.upper(),
                     {"name": DEMO_ADMIN_USER.upper(), "displayName": "x", "email": "x@x.io"},
                     "drift"),
           Operation(OpKind.DELETE_USER, "ldap.jo", {"name": "ldap.jo"}, "gone")]
    plan(store, *ops)
    users = run(store, client, "users")
    removals = run(store, client, "removals")
    assert (users.done, users.failed, removals.done, removals.failed) == (0, 0, 0, 0)
    assert "the service account" in users.refused[0]
    assert "read-only directory 'Corp LDAP'" in removals.refused[0]
    assert [a["outcome"] for a in store.attempts("r1")] == ["skipped", "skipped"]
    assert app.state.emulator.user(DEMO_ADMIN_USER).display_name != "x"
    plan(store, add("devs", "alice", DEMO_ADMIN_USER))
    additions = run(store, client, "additions")
    assert additions.done == 1 and len(additions.refused) == 1
    assert {m["name"] for m in client.group_members("devs")} == {"alice"}


def test_create_that_times_out_is_read_back_and_converged(served, store) -> None:
    _, _, base = served
    slow = BitbucketClient(base, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                           settings=HttpSettings(timeout=0.5, retries=2, backoff_factor=0.1))
    requests.put(f"{base}/_emulator/faults", json={"script": [
        {"fault": "timeout", "method": "POST", "path": "/admin/users", "seconds": 1.5}]},
        timeout=5)
    plan(store, create("alice", "u1"))
    result = run(store, slow, "users")
    assert result.done == 1
    attempt = store.attempts("r1")[0]
    assert attempt["error"].startswith(
        "treated as done: create got no answer; user found on reading back; same details")
    assert slow.transport.stats["read_backs"] == 1
    posts = requests.get(f"{base}/_emulator/calls", timeout=5).json()["POST /rest/api/1.0/admin/users"]
    assert posts == 1  # never sent twice
    assert store.anchors() == {"u1": "alice"}


def test_missing_users_are_isolated_by_halving(served, store) -> None:
    client, app, _ = served
    client.create_group("devs")
    names = [f"u{i}" for i in range(8)]
    for name in names:
        if name != "u5":
            client.create_user(name, name, f"{name}@x.io")
    plan(store, add("devs", *names))
    app.state.calls.reset()
    result = run(store, client, "additions")
    assert result.failed == 1 and "u5" in result.errors[0]
    assert {m["name"] for m in client.group_members("devs")} == set(names) - {"u5"}
    # 8 fail; 4 ok + 4 fail; 2 ok + 2 fail; 1 ok + 1 missing
    assert app.state.calls.snapshot()["POST /rest/api/1.0/admin/groups/add-users"] == 7


def test_identities_a_newer_run_planned_for_are_left_to_it(served, store) -> None:
    """Per identity: carol and bob were taken by a run with newer IDCS data after r1 planned;
    r1 leaves exactly them to it, and still adds alice."""
    client, _, _ = served
    client.create_group("devs")
    client.create_user("alice", "Alice", "a@x.io")
    client.create_user("bob", "Bob", "b@x.io")
    ops = [create("carol", "u3"), add("devs", "alice", "bob")]
    annotate(ops, {"alice": "u1", "bob": "u2", "carol": "u3"})
    plan(store, *ops)
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    assert identity_state.register_intent(store, "r1", old, {i for o in ops for i in o.identities}) == {}
    assert identity_state.register_intent(store, "r2", new, {"user:u2", "user:u3"}) == {}
    users = apply_batch(store, client, "r1", "users", 0)
    additions = apply_batch(store, client, "r1", "additions", 0)
    assert (users.superseded, users.done, additions.done) == (1, 0, 1)
    assert client.find_user("carol") is None
    assert {m["name"] for m in client.group_members("devs")} == {"alice"}
    assert [op["status"] for op in store.plan("r1")] == ["superseded", "done"]
    superseded = [a for a in store.attempts("r1") if a["outcome"] == "superseded"]
    assert len(superseded) == 1 and "r2 planned for this identity" in superseded[0]["error"]
    # an older run cannot take them back
    assert identity_state.register_intent(store, "r3", old, {"user:u2"}) == {"user:u2": "r2"}


# ---- operations side by side, lanes, slow start, preflight reuse, even batches ----------------


def test_lanes_keep_one_target_in_order_and_let_the_rest_run_side_by_side() -> None:
    ops = [create("alice", "u1"),
           Operation(OpKind.RENAME_USER, "bob", {"name": "bob", "newName": "Robert"}, "x"),
           create("carol", "u3"),
           Operation(OpKind.UPDATE_USER, "robert", {"name": "robert", "displayName": "R",
                                                    "email": "r@x.io"}, "x"),
           Operation(OpKind.UPDATE_USER, "ALICE", {"name": "ALICE", "displayName": "A",
                                                   "email": "a@x.io"}, "x")]
    assert [[op.target for op in lane] for lane in lanes(ops)] == [
        ["alice", "ALICE"], ["bob", "robert"], ["carol"]]
    # additions to different groups never chain through a shared user; removals key by user
    adds = [add("devs", "alice", "bob"), add("ops", "alice"), add("devs", "carol")]
    assert [len(lane) for lane in lanes(adds)] == [2, 1]
    removals = [Operation(OpKind.REMOVE_MEMBERSHIP, "bob", {"user": "bob", "group": "devs"}, "x"),
                Operation(OpKind.REMOVE_MEMBERSHIP, "eve", {"user": "eve", "group": "devs"}, "x"),
                Operation(OpKind.DELETE_USER, "bob", {"name": "bob"}, "x")]
    assert [[op.kind.value for op in lane] for lane in lanes(removals)] == [
        ["remove_membership", "delete_user"], ["remove_membership"]]


def test_a_batch_sends_operations_side_by_side(served, store, monkeypatch) -> None:
    """Two creates meet at a barrier: only possible when both are in flight at once (sent one
    after another, the first would wait at the barrier alone and break it)."""
    client, _, _ = served
    plan(store, create("first", "u0"), *[create(f"user{i}", f"u{i + 1}") for i in range(3)])
    barrier = threading.Barrier(2, timeout=30)
    real = client.create_user
    seen: list[str] = []

    def create_user(name: str, *args: Any, **kwargs: Any) -> bool:
        seen.append(name)
        if name in ("user0", "user1"):  # after "first" succeeded alone (slow start)
            barrier.wait()
        return real(name, *args, **kwargs)

    monkeypatch.setattr(client, "create_user", create_user)
    result = apply_batch(store, client, "r1", "users", 0, workers=4)
    assert (result.done, result.failed) == (4, 0)
    assert seen[0] == "first"
    assert not barrier.broken
    assert store.anchors() == {"u0": "first", "u1": "user0", "u2": "user1", "u3": "user2"}


def test_a_storm_sends_no_volley_and_the_breaker_stops_every_lane(served, store) -> None:
    """After a failure operations go out one at a time again, so a 5xx storm sends exactly as
    many operations as the breaker allows, whatever the number of workers."""
    client, _, base = served
    plan(store, *[create(f"user{i}", f"u{i}") for i in range(30)])
    client.preflight()  # before the storm: count the creates only
    requests.delete(f"{base}/_emulator/responses", timeout=5)
    requests.put(f"{base}/_emulator/faults", json={"error_rate": 1.0, "error_statuses": [503]},
                 timeout=5)
    result = apply_batch(store, client, "r1", "users", 0, workers=8,
                         breaker=BreakerSettings(max_consecutive_failures=3))
    answered = requests.get(f"{base}/_emulator/responses", timeout=5).json()["responses"]
    assert answered == {"503": 3}
    assert result.breaker is not None and result.failed == 30
    not_sent = [a for a in store.attempts("r1") if a["error"].startswith("not attempted")]
    assert len(not_sent) == 27
    assert {op["status"] for op in store.plan("r1")} == {"failed"}


def test_later_batches_reuse_the_runs_preflight(served, store) -> None:
    client, app, base = served
    requests.put(f"{base}/_emulator/rate-limit", json={"capacity": 60, "fillRate": 5}, timeout=5)
    ops = [create("alice", "u1"), create("bob", "u2")]
    ops[1].batch = 1
    store.record_plan("r1", ops)
    apply_batch(store, client, "r1", "users", 0)
    app.state.calls.reset()
    other = BitbucketClient(base, DEMO_ADMIN_USER, DEMO_ADMIN_PASSWORD,
                            settings=HttpSettings(retries=0))
    apply_batch(store, other, "r1", "users", 1)  # another task: its own client
    calls = app.state.calls.snapshot()
    assert not [c for c in calls if "rate-limit" in c]
    assert sum(calls.values()) == 1  # the create only
    assert other.preflight_report.client_rate == client.preflight_report.client_rate
    assert other.transport.limiter is not None
    assert (other.transport.limiter.capacity, other.transport.limiter.fill_rate) == (57.0, 4.75)
    assert other.transport.stats["paced_seconds"] > 0  # no fresh burst: the run spent it
    assert client.transport.stats["paced_seconds"] == 0  # the first batch had the burst


@pytest.mark.parametrize(("n", "batch_size", "max_batches", "sizes"), [
    (965, 200, 256, [121] * 5 + [120] * 3),  # 5 batches of ≤ 200 → 8: two rounds of 4 slots
    (150, 200, 256, [150]),  # fits one batch: stays one
    (300, 200, 256, [75] * 4),
    (10, 2, 3, [4, 3, 3]),  # max_batches wins over the multiple of the slots
    (5000, 2, 100, [50] * 100),
])
def test_batches_split_a_phase_evenly_across_the_slots(n: int, batch_size: int,
                                                       max_batches: int, sizes: list[int]) -> None:
    ops = [create(f"user{i}", f"u{i}") for i in range(n)]
    assign_batches(ops, batch_size=batch_size, max_batches=max_batches)
    got = [sum(op.batch == b for op in ops) for b in range(max(op.batch for op in ops) + 1)]
    assert sorted(got, reverse=True) == sizes
    assert [op.batch for op in ops] == sorted(op.batch for op in ops)  # plan order kept
    assert max(got) <= max(batch_size, -(-n // max_batches))


def test_each_batch_says_how_many_batches_share_its_phase() -> None:
    ops = [create(f"user{i}", f"u{i}") for i in range(300)]
    ops.append(Operation(OpKind.CREATE_GROUP, "devs", {"name": "devs"}, "x"))
    assign_batches(ops, batch_size=200, max_batches=256)
    refs = batch_refs("r1", ops)
    assert [r["batches"] for r in refs["users"]] == [4, 4, 4, 4]
    assert [r["batches"] for r in refs["groups"]] == [1]
