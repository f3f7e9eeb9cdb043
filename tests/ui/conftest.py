"""An audit store holding two runs, with hostile names and error texts, for the page tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from identity_sync.audit.store import AuditStore
from identity_sync.planning.operations import Operation, OpKind

SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = '"><img src=x onerror=alert(2)>'
ERROR_TEXT = "400 Bad Request: <b>name</b> is invalid & \"quoted\""


@dataclass
class Seeded:
    store: AuditStore
    url: str
    first: str = "scheduled__2026-11-28T10:00:00+00:00"
    second: str = "manual__2026-11-29T10:00:00+00:00"


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    """Run 1 creates group devs, users alice and a script-named user, adds both to devs.
    Run 2 renames alice, fails to create the img-named user (503 then 400), removes bob from
    ops, and quarantines one record with a hostile value."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = AuditStore(url)
    s = Seeded(store, url)
    store.start_run(s.first, dag_id="idcs_bitbucket_sync", trigger="scheduled", mode="full",
                    dry_run=False, rules_hash="a" * 64)
    first = [
        Operation(OpKind.CREATE_GROUP, "devs", {"name": "devs"}, "group produced by the rules",
                  after={"name": "devs"}),
        Operation(OpKind.CREATE_USER, "alice", {"name": "alice", "displayName": "Alice"},
                  "user in IDCS scope has no Bitbucket account",
                  after={"name": "alice", "displayName": "Alice"}, idcs_id="id-alice"),
        Operation(OpKind.CREATE_USER, SCRIPT_NAME, {"name": SCRIPT_NAME},
                  "user in IDCS scope has no Bitbucket account",
                  after={"name": SCRIPT_NAME}, idcs_id="id-script"),
        Operation(OpKind.ADD_MEMBERS, "devs", {"group": "devs", "users": ["alice", SCRIPT_NAME]},
                  "member in IDCS, not in Bitbucket", after={"members": ["alice", SCRIPT_NAME]}),
    ]
    store.record_plan(s.first, first)
    for op in first:
        store.record_attempt(s.first, op.op_id, outcome="done", http_status=201, error=None,
                             started=time.monotonic())
    store.record_dq(s.first, [
        {"suite": "idcs_users", "expectation": "email_format", "severity": "record",
         "success": True, "unexpected_count": 0, "sample": []}])
    store.update_run(s.first, status="succeeded", ended_at=store.get_run(s.first)["started_at"])

    store.start_run(s.second, dag_id="idcs_bitbucket_sync", trigger="manual",
                    mode="incremental", dry_run=False, rules_hash="b" * 64)
    second = [
        Operation(OpKind.RENAME_USER, "alice", {"name": "alice", "newName": "alice.smith"},
                  "IDCS userName changed", before={"name": "alice"},
                  after={"name": "alice.smith"}, idcs_id="id-alice"),
        Operation(OpKind.CREATE_USER, IMG_NAME, {"name": IMG_NAME},
                  "user in IDCS scope has no Bitbucket account", after={"name": IMG_NAME},
                  idcs_id="id-img"),
        Operation(OpKind.REMOVE_MEMBERSHIP, "bob", {"user": "bob", "group": "ops"},
                  "not a member in IDCS: remove from ops", before={"member": True},
                  after={"member": False}),
    ]
    store.record_plan(s.second, second)
    rename, create, remove = second
    for op in (rename, remove):
        store.record_attempt(s.second, op.op_id, outcome="done", http_status=204, error=None,
                             started=time.monotonic())
    store.record_attempt(s.second, create.op_id, outcome="failed", http_status=503,
                         error="Service Unavailable", started=time.monotonic())
    store.record_attempt(s.second, create.op_id, outcome="failed", http_status=400,
                         error=ERROR_TEXT, started=time.monotonic())
    store.record_dq(s.second, [
        {"suite": "idcs_users", "expectation": "email_format", "severity": "record",
         "success": False, "unexpected_count": 1, "sample": [IMG_NAME]}])
    store.record_quarantine(s.second, [
        {"record_type": "user", "record_id": "id-quarantined", "reason": "invalid email",
         "expectation": "email_format", "value": SCRIPT_NAME}])
    store.update_run(s.second, status="failed", message=f"1 operation failed: {IMG_NAME}")
    yield s
    store.dispose()
