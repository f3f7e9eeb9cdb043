"""A controllable clock for the audit store and a two-run history to ask questions of."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from identity_sync.audit import store as store_module
from identity_sync.audit.store import AuditStore
from identity_sync.planning.operations import Operation, OpKind

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


class Clock:
    """Replaces ``utcnow`` in the store so every recorded time is known to the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, moment: datetime) -> Clock:
        self.now = moment
        return self


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(store_module, "utcnow", clock)
    return clock


def state(groups: list[str], memberships: dict[str, list[str]]) -> dict:
    """A ``BitbucketState.to_dict()`` payload: memberships keyed by casefolded group name."""
    return {"users": [], "groups": groups, "memberships": memberships,
            "group_permissions": {}, "user_permissions": {}}


def attempt(store: AuditStore, run: str, op: Operation, outcome: str = "done",
            http_status: int | None = None, error: str | None = None) -> None:
    store.record_attempt(run, op.op_id, outcome=outcome, http_status=http_status, error=error,
                         started=time.monotonic())


@dataclass
class History:
    store: AuditStore
    r1: str = "scheduled__2026-03-01T10:00:00+00:00"
    r2: str = "scheduled__2026-03-02T10:00:00+00:00"


@pytest.fixture
def history(audit_url: str, clock: Clock) -> Iterator[History]:
    """Run 1 creates group devs and users alice (u1) and bob (u2), both in devs; carol (u3) is
    quarantined. Run 2 renames alice to alice.smith, removes bob from devs, and fails to create
    carol twice (503, then 400)."""
    store = AuditStore(audit_url)
    h = History(store)
    m = timedelta(minutes=1)
    clock.at(T0)
    store.start_run(h.r1, dag_id="idcs_bitbucket_sync", trigger="scheduled", mode="full",
                    dry_run=False, rules_hash="h1", rules_version="7")
    store.record_quarantine(h.r1, [{"record_type": "user", "record_id": "u3",
                                    "reason": "invalid email", "expectation": "email_regex",
                                    "value": "carol-at-example"}])
    clock.at(T0 + m)
    store.put_artifact(h.r1, "bitbucket_state", state(["stash-users"],
                                                      {"stash-users": ["admin"]}), 1)
    group = Operation(OpKind.CREATE_GROUP, "devs", {"name": "devs"}, "group from rules")
    alice = Operation(OpKind.CREATE_USER, "alice", {"name": "alice"}, "new in IDCS",
                      after={"name": "alice"}, idcs_id="u1")
    bob = Operation(OpKind.CREATE_USER, "bob", {"name": "bob"}, "new in IDCS",
                    after={"name": "bob"}, idcs_id="u2")
    add = Operation(OpKind.ADD_MEMBERS, "devs", {"group": "devs", "users": ["alice", "bob"]},
                    "member in IDCS", after={"members": ["alice", "bob"]})
    clock.at(T0 + 2 * m)
    store.record_plan(h.r1, [group, alice, bob, add])
    clock.at(T0 + 3 * m)
    for op in (group, alice, bob, add):
        attempt(store, h.r1, op)
    store.save_anchors(h.r1, {"u1": "alice", "u2": "bob"})
    clock.at(T0 + 4 * m)
    store.update_run(h.r1, status="succeeded", ended_at=clock.now)

    clock.at(T1)
    store.start_run(h.r2, dag_id="idcs_bitbucket_sync", trigger="scheduled", mode="full",
                    dry_run=False, rules_hash="h1", rules_version="7")
    clock.at(T1 + m)
    store.put_artifact(h.r2, "bitbucket_state", state(
        ["stash-users", "DEVS"], {"stash-users": ["admin"], "devs": ["alice", "bob"]}), 2)
    rename = Operation(OpKind.RENAME_USER, "alice", {"name": "alice", "newName": "alice.smith"},
                       "userName changed in IDCS", before={"name": "alice"},
                       after={"name": "alice.smith"}, idcs_id="u1")
    remove = Operation(OpKind.REMOVE_MEMBERSHIP, "bob", {"user": "bob", "group": "devs"},
                       "not a member in IDCS: remove from devs", before={"member": True},
                       after={"member": False})
    carol = Operation(OpKind.CREATE_USER, "carol", {"name": "carol"}, "new in IDCS",
                      after={"name": "carol"}, idcs_id="u3")
    clock.at(T1 + 2 * m)
    store.record_plan(h.r2, [rename, remove, carol])
    clock.at(T1 + 3 * m)
    attempt(store, h.r2, rename)
    store.save_anchors(h.r2, {"u1": "alice.smith"})
    attempt(store, h.r2, remove)
    attempt(store, h.r2, carol, "failed", 503, "Service Unavailable")
    clock.at(T1 + 4 * m)
    attempt(store, h.r2, carol, "failed", 400, "emailAddress is invalid")
    clock.at(T1 + 5 * m)
    store.update_run(h.r2, status="failed", ended_at=clock.now, message="1 operation failed")
    yield h
    store.dispose()
