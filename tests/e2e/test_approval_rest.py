"""The safety gate's approval on a real scheduler: ``airflow standalone``, the REST API, a second
Airflow user who is not an approver.

A full run that would deprovision more users than the (tiny) limits waits at ``approve_plan`` in
``awaiting_input``; a PATCH by a user the rules do not name gets 403; the named approver's
Approve lets the run apply and succeed. When nobody answers before the (seconds-long) timeout,
the run fails, the audit store says ``blocked`` and Bitbucket is unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity_sync.audit.store import AuditStore
from identity_sync.mapping.rules import DEFAULT_RULES_PATH

from .standalone import ROOT, Standalone, standalone_airflow, wait_for
from .test_sync_dag import expected_state

pytestmark = pytest.mark.e2e
SYNC = "idcs_bitbucket_sync"
APPROVER, OTHER = "admin", "operator"  # simple auth manager users; "operator" has role USER
LICENCE_GROUP = "bitbucket-users"
TIMINGS: dict[str, float] = {}


class Env:
    def __init__(self, airflow: Standalone, rules: Path, audit_url: str) -> None:
        self.airflow, self.rules, self.audit = airflow, rules, AuditStore(audit_url)

    def write_rules(self, **safety: Any) -> None:
        """The shipped rules with tiny limits: 3 users losing access need an approval."""
        data = yaml.safe_load(DEFAULT_RULES_PATH.read_text())
        data["safety"].update({"max_deprovision": 2, "max_deprovision_percent": 50,
                               "approvers": [APPROVER], **safety})
        self.rules.write_text(yaml.safe_dump(data, sort_keys=False))

    def deactivate(self, first: int, count: int) -> set[str]:
        """Deactivate in-scope IDCS users ``first`` .. ``first + count``; their names."""
        dump = self.airflow.idcs.to_dict()
        leaving = set(sorted(expected_state(dump)[0])[first:first + count])
        for user in dump["users"]:
            if user["userName"].lower() in leaving:
                user["active"] = False
        self.airflow.idcs.load_dict(dump)
        return leaving

    def licensed(self) -> set[str]:
        return set(self.airflow.bitbucket.to_dict()["memberships"].get(LICENCE_GROUP, []))

    def wait_awaiting_input(self, run_id: str) -> float:
        started = time.monotonic()
        wait_for(lambda: self.airflow.task_state(SYNC, run_id, "approve_plan")
                 == "awaiting_input", 240, f"{run_id}.approve_plan to await input")
        return time.monotonic() - started

    def answer(self, run_id: str, user: str, option: str) -> Any:
        return self.airflow.api(
            "PATCH", f"/dags/{SYNC}/dagRuns/{run_id}/taskInstances/approve_plan/-1/hitlDetails",
            user=user, json={"chosen_options": [option]})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("approval")
    rules = tmp / "rules.yaml"
    started = time.monotonic()
    with standalone_airflow(tmp, log_name="standalone-approval.log", env={
        "IDSYNC_RULES_FILE": str(rules),
        "IDSYNC_SCHEDULE": "none",  # only the runs this test triggers
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{APPROVER}:admin,{OTHER}:user",
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",  # the HITL timeout sweep
    }) as airflow:
        TIMINGS["standalone_start_s"] = round(time.monotonic() - started, 1)
        environment = Env(airflow, rules, f"sqlite:///{tmp / 'audit.db'}")
        environment.write_rules(approval_timeout_hours=1)
        airflow.unpause(SYNC)
        started = time.monotonic()
        airflow.trigger(SYNC, "baseline", mode="full")
        assert airflow.wait_finished(SYNC, "baseline") == "success"
        TIMINGS["baseline_run_s"] = round(time.monotonic() - started, 1)
        yield environment
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "approval_e2e.json").write_text(json.dumps(TIMINGS, indent=1))
    print(f"approval e2e timings: {TIMINGS}")


def test_a_named_approver_lets_a_gated_run_apply(env: Env) -> None:
    env.write_rules(approval_timeout_hours=1)
    leaving = env.deactivate(0, 5)
    licensed = env.licensed()
    assert leaving <= licensed
    started = time.monotonic()
    env.airflow.trigger(SYNC, "gated_approved", mode="full")
    TIMINGS["trigger_to_awaiting_input_s"] = round(env.wait_awaiting_input("gated_approved"), 1)

    run = env.audit.get_run("gated_approved")
    assert run["status"] == "awaiting_approval"
    assert run["message"].startswith("plan takes access from ")
    detail = env.airflow.api(
        "GET", f"/dags/{SYNC}/dagRuns/gated_approved/taskInstances/approve_plan/-1/hitlDetails"
    ).json()
    assert detail["assigned_users"] == [{"id": APPROVER, "name": APPROVER}]
    assert detail["options"] == ["Approve", "Reject"]
    assert detail["body"].startswith(f"**Why this needs approval:** {run['message']}")
    assert "**Deprovisions** (" in detail["body"]
    assert env.licensed() == licensed  # nothing written while waiting

    forbidden = env.answer("gated_approved", OTHER, "Approve")
    assert forbidden.status_code == 403, forbidden.text
    assert f"User={OTHER}" in forbidden.text and "not a respondent" in forbidden.text
    assert env.audit.get_run("gated_approved")["status"] == "awaiting_approval"

    answered = time.monotonic()
    approved = env.answer("gated_approved", APPROVER, "Approve")
    assert approved.status_code == 200, approved.text
    assert env.airflow.wait_finished(SYNC, "gated_approved") == "success"
    TIMINGS["approve_to_success_s"] = round(time.monotonic() - answered, 1)
    TIMINGS["approved_case_s"] = round(time.monotonic() - started, 1)
    run = env.audit.get_run("gated_approved")
    assert (run["status"], run["approved_by"]) == ("succeeded", APPROVER)
    assert not leaving & env.licensed()  # the approved plan was applied


def test_no_answer_before_the_timeout_blocks_the_run(env: Env) -> None:
    env.write_rules(approval_timeout_hours=0.002)  # 7.2 seconds
    try:
        leaving = env.deactivate(5, 5)
        licensed = env.licensed()
        assert leaving <= licensed
        started = time.monotonic()
        env.airflow.trigger(SYNC, "gated_unanswered", mode="full")
        env.wait_awaiting_input("gated_unanswered")
        assert env.airflow.wait_finished(SYNC, "gated_unanswered") == "failed"
        TIMINGS["timeout_case_s"] = round(time.monotonic() - started, 1)
    finally:
        env.write_rules(approval_timeout_hours=1)
    run = env.audit.get_run("gated_unanswered")
    assert run["status"] == "blocked"
    assert run["message"].startswith(f"no approval within 7s from approvers {APPROVER}: "
                                     "plan takes access from ")
    assert "\n" not in run["message"]
    assert env.licensed() == licensed  # Bitbucket unchanged
    assert {op["status"] for op in env.audit.plan("gated_unanswered")} == {"planned"}
    states = {t: env.airflow.task_state(SYNC, "gated_unanswered", t)
              for t in ("approve_plan", "apply_removals", "finish_run")}
    assert states == {"approve_plan": "success", "apply_removals": "skipped",
                      "finish_run": "failed"}
