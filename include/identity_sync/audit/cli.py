"""``idsync-audit``: answers from the audit store on the command line, as tables or ``--json``.

The database comes from ``--db`` (a SQLAlchemy URL or an SQLite file path), else ``IDSYNC_AUDIT_DB``,
else the Airflow connection ``sync_audit_db`` when Airflow is installed and configured. Airflow is
never needed otherwise.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO

from . import queries as q
from .migrate import head_revision
from .store import AuditStore

ENV_DB = "IDSYNC_AUDIT_DB"


class CliError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


def resolve_url(db: str | None) -> str:
    """``--db``, then ``IDSYNC_AUDIT_DB``, then Airflow's ``sync_audit_db`` connection."""
    value = db or os.environ.get(ENV_DB)
    if value:
        return value if "://" in value else f"sqlite:///{Path(value).expanduser().resolve()}"
    if importlib.util.find_spec("airflow") is None:
        raise CliError(f"no audit database: pass --db URL or set {ENV_DB}")
    try:
        from identity_sync_airflow.hooks import AuditStoreHook

        return AuditStoreHook().sqlalchemy_url()
    except Exception as exc:  # any Airflow lookup failure means: not configured here
        raise CliError(f"no audit database: pass --db URL, set {ENV_DB}, or define the Airflow "
                       f"connection sync_audit_db ({exc})") from exc


# -- formatting -----------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _brief(value: Any) -> str:
    """``{"displayName": "A"}`` → ``displayName=A``: short enough for a table cell."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_brief(v) if isinstance(v, dict | list) else v}"
                         for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def change_text(before: Any, after: Any, kind: str = "", params: dict[str, Any] | None = None
                ) -> str:
    if kind == "remove_membership" and params:
        return f"member of {params.get('group')} → removed"
    if before is None and after is None:
        return ""
    return f"{_brief(before) or '∅'} → {_brief(after) or '∅'}"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], out: TextIO,
          max_width: int = 60) -> None:
    """A plain aligned text table; long cells are cut with an ellipsis."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if not rows:
        print("(none)", file=out)


def _cell(value: Any, max_width: int) -> str:
    text = _when(value) if isinstance(value, datetime) else ("" if value is None else str(value))
    text = text.replace("\n", " ")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


# -- commands -------------------------------------------------------------------------------------
def cmd_runs(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    rows = q.runs_overview(store, args.limit)
    if not args.json:
        table([[r["run_id"], r["status"], r["trigger"], r["mode"], "yes" if r["dry_run"] else "",
                r["started_at"], r["ended_at"], r["operations"], r["done"], r["failed"],
                r["quarantined"]] for r in rows],
              ["run", "status", "trigger", "mode", "dry", "started (UTC)", "ended (UTC)", "ops",
               "done", "failed", "quarantined"], out)
    return rows


def cmd_user(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    ident, events = q.user_timeline(store, args.who)
    result = {"query": args.who, "idcs_ids": sorted(ident.idcs_ids),
              "names": sorted(ident.names), "current_name": ident.current_name,
              "events": events}
    if not args.json:
        print(f"{args.who}: IDCS id {', '.join(sorted(ident.idcs_ids)) or '(unknown)'}; "
              f"Bitbucket name now {ident.current_name or '(no anchor)'}; "
              f"known as {', '.join(sorted(ident.names))}", file=out)
        table([[e["at"], e["run_id"], e["event"], e["kind"], e["target"], e["status"],
                e["http_status"] or "",
                change_text(e["before"], e["after"], e["kind"], e.get("params")),
                e["error"] or e["reason"]] for e in events],
              ["time (UTC)", "run", "event", "kind", "target", "status", "http", "before → after",
               "reason / error"], out, max_width=48)
    return result


def cmd_group_members(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    result = q.group_members_at(store, args.group, q.parse_time(args.at))
    if not args.json:
        changes = result["changes_after_snapshot"]
        where = (f"from the Bitbucket state read by run {result['snapshot_run_id']} at "
                 f"{_when(result['snapshot_at'])}, plus {len(changes)} applied change(s) after it")
        if not result["exists"]:
            print(f"{result['group']} did not exist at {_when(result['at'])} ({where})", file=out)
        elif not result["known"]:
            print(f"{result['group']} existed at {_when(result['at'])}, but the sync did not read "
                  f"its members (not a managed or licence group) ({where})", file=out)
        else:
            print(f"{result['group']} at {_when(result['at'])} UTC: {len(result['members'])} "
                  f"members ({where})", file=out)
            for name in result["members"]:
                print(f"  {name}", file=out)
        if changes:
            print("\nchanges applied after the snapshot:", file=out)
            table([[c["at"], c["run_id"], c["change"], c["reason"]] for c in changes],
                  ["time (UTC)", "run", "change", "reason"], out)
    return result


def cmd_run(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    result = q.run_changes(store, args.run_id)
    if not args.json:
        run = result["run"]
        print(f"run {run['run_id']} ({run['dag_id']}, {run['trigger']}, {run['mode']}"
              f"{', dry run' if run['dry_run'] else ''}): {run['status']}, "
              f"{_when(run['started_at'])} → {_when(run['ended_at'])} UTC", file=out)
        if run["message"]:
            print(f"  {run['message']}", file=out)
        print("  operations: " + (", ".join(f"{n} {s}" for s, n in
                                            sorted(result["statuses"].items())) or "none"),
              file=out)
        for kind, items in sorted(result["applied"].items()):
            print(f"\n{kind} ({len(items)} applied)", file=out)
            table([[i["target"], change_text(i["before"], i["after"], kind, i["params"]),
                    i["reason"]] for i in items], ["target", "before → after", "reason"], out,
                  max_width=70)
        if result["failures"]:
            print(f"\nfailures ({len(result['failures'])})", file=out)
            table([[f["kind"], f["target"], f["http_status"] or "", f["attempts"], f["error"],
                    f["reason"]] for f in result["failures"]],
                  ["kind", "target", "http", "attempts", "error", "reason"], out)
    return result


def cmd_quarantine(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    run_id = args.run or q.latest_run_id(store)
    rows = store.quarantined(run_id) if run_id else []
    if not args.json:
        print(f"quarantine of run {run_id or '(no runs)'}: {len(rows)} record(s)", file=out)
        table([[r["record_type"], r["record_id"], r["reason"], r["expectation"] or "",
                r["value"] or ""] for r in rows],
              ["type", "record", "reason", "expectation", "value"], out)
    return {"run_id": run_id, "records": rows}


def cmd_export(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    if store.get_run(args.run_id) is None and not store.plan(args.run_id):
        raise CliError(f"no run {args.run_id!r} in the audit store")
    rows = q.export_rows(store, args.run_id)
    if args.csv == "-":
        write_csv(rows, out)
        return None
    with Path(args.csv).open("w", newline="", encoding="utf-8") as target:
        write_csv(rows, target)
    result = {"run_id": args.run_id, "file": args.csv, "rows": len(rows)}
    if not args.json:
        print(f"wrote {len(rows)} rows of run {args.run_id} to {args.csv}", file=out)
    return result


#: A spreadsheet reads a cell that starts with one of these as a formula (OWASP, CSV Injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (``=HYPERLINK(...)`` as a display
    name, an error message echoing one) gets a leading single quote, so it shows as text. Numbers
    and other cells are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(rows: list[dict[str, Any]], target: TextIO) -> None:
    """The export; every text cell goes through :func:`csv_safe` (IDCS data is untrusted)."""
    writer = csv.DictWriter(target, fieldnames=q.EXPORT_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v.isoformat() if isinstance(v, datetime) else csv_safe(v)
                         for k, v in row.items()})


def cmd_prune(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    deleted = store.prune(older_than_days=args.days)
    if not args.json:
        print(f"pruned runs that ended more than {args.days} days ago (anchors kept): "
              + ", ".join(f"{n} {table_name}" for table_name, n in deleted.items()), file=out)
    return {"days": args.days, "deleted": deleted}


def cmd_migrate(store: AuditStore, args: argparse.Namespace, out: TextIO) -> Any:
    revision = head_revision()  # opening the store already upgraded the database
    if not args.json:
        print(f"audit schema at revision {revision} (head)", file=out)
    return {"revision": revision}


Command = Callable[[AuditStore, argparse.Namespace, TextIO], Any]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help=f"SQLAlchemy URL or SQLite file (default: ${ENV_DB}, then "
                                     "the Airflow connection sync_audit_db)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = argparse.ArgumentParser(prog="idsync-audit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("runs", cmd_runs, "the last runs with their counts and status").add_argument(
        "--limit", type=int, default=20)
    add("user", cmd_user, "every change to one user, with reasons, in time order "
        "(old and new names and the IDCS id all resolve)").add_argument("who")
    p = add("group-members", cmd_group_members, "who was in a group at a given time")
    p.add_argument("group")
    p.add_argument("--at", required=True, help="ISO 8601 time (UTC when no offset is given)")
    add("run", cmd_run, "what one run changed, and what failed").add_argument("run_id")
    add("quarantine", cmd_quarantine, "quarantined records (default: the latest run)"
        ).add_argument("--run")
    p = add("export", cmd_export, "CSV of a run's operations and attempts (text cells that "
            "start with = + - @ tab or CR get a leading ' so spreadsheets show them as text)")
    p.add_argument("run_id")
    p.add_argument("--csv", required=True, help="output file, or - for stdout")
    add("prune", cmd_prune, "delete runs that ended more than N days ago (anchors are kept)"
        ).add_argument("--days", type=int, default=365)
    add("migrate", cmd_migrate, "upgrade the audit schema to the newest revision")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        store = AuditStore(resolve_url(args.db))
        try:
            result = args.func(store, args, out)
        finally:
            store.dispose()
    except (CliError, LookupError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        print(f"idsync-audit: {message}", file=sys.stderr)
        return 2
    if args.json and result is not None:
        json.dump(result, out, default=_plain, indent=2, ensure_ascii=False)
        print(file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
