"""Concurrency on a real scheduler (``airflow standalone``, LocalExecutor), triggered over the
REST API as a login flow would: 20 on-login runs for 20 new users at once, with a full run
started in the middle. Every user ends in Bitbucket with their groups, no run's operation is
left to a run that did not plan for that same identity, and every run's status is true.
Records the numbers in ``test-artifacts/concurrency.json`` (measured, never asserted)."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from identity_sync.audit import schema
from identity_sync.audit.store import AuditStore

from .test_standalone_rest import airflow_api, wait_for  # noqa: F401  (fixture)
from .test_sync_dag import expected_state

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
LOGIN, FULL = "idcs_bitbucket_login_sync", "idcs_bitbucket_sync"
NEWCOMERS = 20


def without_users(dump: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The IDCS organisation before ``names`` joined: their users, memberships and grants gone."""
    out = copy.deepcopy(dump)
    ids = {u["id"] for u in out["users"] if u["userName"].lower() in names}
    out["users"] = [u for u in out["users"] if u["id"] not in ids]
    for group in out["groups"]:
        group["members"] = [m for m in group.get("members") or [] if m["value"] not in ids]
    out["grants"] = [g for g in out["grants"] if g["grantee"]["value"] not in ids]
    return out


def test_twenty_logins_and_a_full_run_at_once(airflow_api) -> None:  # noqa: F811
    base, token, emulators = airflow_api
    auth = {"Authorization": f"Bearer {token}"}
    idcs = emulators.idcs.server.config.app.state.emulator
    bitbucket = emulators.bitbucket.server.config.app.state.emulator
    org = idcs.to_dict()
    want_users, want_members = expected_state(org)
    newcomers = sorted(want_users)[:NEWCOMERS]
    assert len(newcomers) == NEWCOMERS
    idcs.load_dict(without_users(org, set(newcomers)))

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{base}/api/v2{path}", headers=auth, timeout=30,
                                **kwargs)

    for dag in (LOGIN, FULL):
        wait_for(lambda dag=dag: call("GET", f"/dags/{dag}").ok, 120, f"{dag} to be parsed")
        assert call("PATCH", f"/dags/{dag}", json={"is_paused": False}).status_code == 200

    def trigger(dag: str, run_id: str, conf: dict[str, Any]) -> None:
        resp = call("POST", f"/dags/{dag}/dagRuns",
                    json={"logical_date": None, "dag_run_id": run_id, "conf": conf})
        assert resp.status_code == 200, resp.text

    def state(dag: str, run_id: str) -> str | None:
        run = call("GET", f"/dags/{dag}/dagRuns/{run_id}").json()
        return run["state"] if run["state"] in ("success", "failed") else None

    # The baseline: one full run before the newcomers exist in IDCS.
    trigger(FULL, "full__baseline", {"mode": "full"})
    assert wait_for(lambda: state(FULL, "full__baseline"), 300, "the baseline run") == "success"
    idcs.load_dict(org)  # the newcomers join IDCS and sign in, all at 9:00

    started = time.monotonic()
    runs: dict[str, tuple[str, str]] = {}
    for index, name in enumerate(newcomers):
        if index == NEWCOMERS // 2:
            runs["full__middle"] = (FULL, "full__middle")
            trigger(FULL, "full__middle", {"mode": "full"})
        run_id = f"login__{name}"
        runs[run_id] = (LOGIN, run_id)
        trigger(LOGIN, run_id, {"username": name})
    finished: dict[str, str] = {}

    def all_done() -> bool:
        for run_id, (dag, _) in runs.items():
            if run_id not in finished and (result := state(dag, run_id)):
                finished[run_id] = result
        return len(finished) == len(runs)

    wait_for(all_done, 900, "every run to finish")
    seconds = time.monotonic() - started

    # Statuses are true: green runs are complete in the audit trail, and nothing of a login
    # was left to a run that did not plan for that same user.
    store = AuditStore(audit_url())
    with store.engine.connect() as conn:
        audit = {r.run_id: r for r in conn.execute(select(schema.sync_runs)).all()}
    failed = {r: (audit[r].status, audit[r].message) if r in audit else None
              for r, result in finished.items() if result != "success"}
    assert not failed, failed
    superseded = 0
    for run_id in finished:
        assert audit[run_id].status in ("succeeded", "superseded"), audit[run_id]
        undone = [op for op in store.plan(run_id)
                  if op["status"] not in ("done", "superseded", "skipped")]
        assert undone == [], (run_id, undone[:3])
        for op in store.plan(run_id):
            if op["status"] != "superseded":
                continue
            superseded += 1
            holders = {a["error"] for a in store.attempts(run_id)
                       if a["op_id"] == op["op_id"] and a["outcome"] == "superseded"}
            for identity in op["identities"] or []:
                holder_plans = [p for p in (store.plan(r) for r in runs if r != run_id)
                                if any(identity in (o["identities"] or []) for o in p)]
                assert holder_plans, (run_id, identity, holders)
    # Every newcomer is in Bitbucket with the details and groups IDCS gives them.
    dump = bitbucket.to_dict()
    users = {u["name"]: (u["displayName"], u["emailAddress"]) for u in dump["users"]}
    members = {g.lower(): {m.lower() for m in names}
               for g, names in dump["memberships"].items()}
    for name in newcomers:
        assert users.get(name) == want_users[name], name
        for group, wanted in want_members.items():
            if name in wanted:
                assert name in members.get(group, set()), (name, group)

    report = {"login_runs": NEWCOMERS, "full_runs": 1, "users": NEWCOMERS,
              "seconds_trigger_to_all_done": round(seconds, 1),
              "operations_left_to_newer_runs_of_the_same_identity": superseded}
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "concurrency.json").write_text(json.dumps(report, indent=2))
    print(f"concurrency: {report}")


def audit_url() -> str:
    """The audit database the standalone's connection points at (set by the fixture)."""
    return f"sqlite:///{json.loads(os.environ['AIRFLOW_CONN_SYNC_AUDIT_DB'])['host']}"
