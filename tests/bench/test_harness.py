"""Smoke test of the benchmark harness on a tiny scenario at zero latency: the report's
structure, and that the computed minimum and bound agree with the data (never timings)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import cli, report
from bench.changes import min_star_cover
from bench.minimum import Limits, Minimum, bound_seconds, pages

USERS, GROUPS, MEMBERSHIPS, CHANGES = 50, 6, 150, 10


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench-results")
    code = cli.main(["--users", str(USERS), "--groups", str(GROUPS), "--memberships",
                     str(MEMBERSHIPS), "--changes", str(CHANGES), "--latency", "0",
                     "--name", "tiny", "--results", str(out), "--no-dag"])
    saved = sorted((out / "runs").glob("*-tiny.json"))
    return {"code": code, "dir": out, "data": json.loads(saved[-1].read_text()),
            "markdown": sorted((out / "runs").glob("*-tiny.md"))[-1].read_text()}


def _run(results: dict[str, Any], run: str) -> dict[str, Any]:
    return next(r for r in results["data"]["records"] if r["run"] == run)


def test_every_run_succeeds_and_is_reported(results: dict[str, Any]) -> None:
    assert results["code"] == 0
    runs = [r["run"] for r in results["data"]["records"]]
    assert runs == ["initial", "noop", "incremental", "login"]
    for r in results["data"]["records"]:
        assert r["status"] == "succeeded", r["message"]
        assert set(r["stages"]) >= {"extract", "quality", "map", "read_bitbucket", "plan",
                                    "apply_users", "apply_additions", "finish"}
        assert r["total_requests"] == sum(sum(c.values()) for c in r["calls"].values())
        assert r["peak_rss_mb"] > 0
        assert f"| tiny | {r['run']} | pipeline | succeeded |" in results["markdown"]
    summary = (results["dir"] / "latest.md").read_text()
    assert "## Targets" in summary and "| tiny | initial |" in summary


def test_initial_minimum_matches_the_data(results: dict[str, Any]) -> None:
    r = _run(results, "initial")
    writes, diff, created = r["minimum"]["bitbucket_writes"], r["bitbucket_diff"], r["summary"]
    # Every user and group the sync reports creating is one write in the minimum, and
    # Bitbucket really holds them afterwards.
    assert writes["users_created"] == diff["users_created"] == created["users_created"] > 0
    assert writes["groups_created"] == diff["groups_created"] == created["groups_created"] > 0
    assert diff["memberships_added"] == created["memberships_added"]
    # Additions: one call per group gaining members at most (fewer when users cover them).
    assert 1 <= writes["membership_add_calls_min"] <= diff["membership_add_groups"]
    idcs = r["minimum"]["idcs"]
    assert idcs == {"token": 1, "users": pages(USERS), "groups": 1, "grants": 1}
    # The real client never beats the minimum, and did the writes the diff shows.
    bb = r["calls"]["bitbucket"]
    assert bb["POST /rest/api/1.0/admin/users"] >= writes["users_created"]
    assert r["total_requests"] >= r["minimum"]["total"]


def test_noop_has_no_writes_and_reads_match_the_state(results: dict[str, Any]) -> None:
    r = _run(results, "noop")
    assert r["minimum"]["bitbucket_writes"] == {}
    assert not any(k.startswith(("POST", "PUT", "DELETE")) and "token" not in k
                   for k in r["calls"]["bitbucket"])
    reads = r["minimum"]["bitbucket_reads"]
    initial = _run(results, "initial")
    # Group members are read for every group the sync manages (all exist after the initial
    # run) plus the licence group: one page each at this size.
    managed = initial["bitbucket_diff"]["groups_created"] + 1  # + stash-users, holds LICENSED
    assert reads["group members"] >= managed
    assert reads["users"] == pages(initial["bitbucket_diff"]["users_created"] + 2)


def test_incremental_and_login_minimum(results: dict[str, Any]) -> None:
    inc = _run(results, "incremental")
    assert inc["minimum"]["idcs"]["changed users"] == 1
    assert inc["minimum"]["idcs"]["scope"] == 1  # min(changes, one page of grants)
    assert any("changes:" in n for n in inc["notes"])
    login = _run(results, "login")
    assert login["bitbucket_diff"]["users_created"] == 1
    assert login["minimum"]["bitbucket_writes"]["users_created"] == 1
    assert login["minimum"]["idcs"] == {"token": 1, "user": 1, "scope": 1}


def test_bound_follows_the_formula() -> None:
    m = Minimum({"token": 1, "users": 10}, {"users": 10, "groups": 2},
                {"users_created": 1000, "membership_add_calls_min": 100})
    plain = bound_seconds(m, Limits(0.02, 8))
    assert math.isclose(plain, (12 * 0.02 + 1100 * 0.02) / 8)
    limited = bound_seconds(m, Limits(0.02, 8, rate_capacity=60, rate_fill=5))
    assert math.isclose(limited, (1112 - 60) / 5)
    assert bound_seconds(m, Limits(0.0, 8)) == 0


def test_membership_minimum_is_a_vertex_cover() -> None:
    # Two groups sharing one user: 2 add-users calls; a user in 3 one-member groups: 1
    # add-groups call; mixed: the smaller side wins.
    assert min_star_cover({"a": ["u1", "u2"], "b": ["u1", "u3"]}) == 2
    assert min_star_cover({"a": ["u1"], "b": ["u1"], "c": ["u1"]}) == 1
    assert min_star_cover({"a": ["u1", "u2", "u3"], "b": ["u3"], "c": ["u3"]}) == 2
    assert min_star_cover({}) == 0


def test_targets_table_marks_missed_targets(tmp_path: Path) -> None:
    record = {"run": "initial", "via": "pipeline", "wall": 120.0, "bound": 60.0,
              "wall_over_bound": 2.0, "requests_over_minimum": 1.01, "minimum": {"total": 10},
              "summary": {}, "requests": {}, "responses": {}, "peak_rss_mb": 1}
    table = "\n".join(report.targets_table({"M": [record]}))
    assert "| M initial sync ≤ 90 s wall | 120.0 s | ❌ |" in table
    assert "| M initial requests ≤ 1.05 × minimum | 1.010 | ✅ |" in table
