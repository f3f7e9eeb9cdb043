"""Read-only queries behind the "Identity sync" page in the Airflow UI.

They answer what an administrator browses: the recent runs with what each changed, one run's
operations filtered by user, group, kind and status (with the last attempt's HTTP status and
error), its data-quality results and quarantine, and one person's timeline (reused from
:mod:`.queries`). Plain functions over an :class:`AuditStore`, no Airflow, no writes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from ..model import key
from . import schema as t
from .queries import aware, runs_overview, user_timeline
from .store import AuditStore

# What each operation kind changes, for the per-run chart and the filters.
CATEGORY_OF_KIND: dict[str, str] = {
    "create_user": "users", "rename_user": "users", "update_user": "users",
    "adopt_user": "users", "delete_user": "users", "disable_user": "users",
    "reactivate_user": "users", "revoke_user_permission": "users",
    "create_group": "groups", "set_group_permission": "groups", "delete_group": "groups",
    "add_members": "memberships", "remove_membership": "memberships",
}
CATEGORIES = ("users", "groups", "memberships")
GROUP_TARGET_KINDS = frozenset({"create_group", "set_group_permission", "delete_group",
                                "add_members"})
MAX_OPERATIONS = 500  # one page of the operations table


def recent_runs(store: AuditStore, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs, newest first (:func:`.queries.runs_overview`), each with ``changes``:
    completed changes by category (a batch add counts one per member) and ``failed``."""
    runs = runs_overview(store, limit=limit)
    ids = [r["run_id"] for r in runs]
    op = t.plan_operations.c
    changes: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0))
    with store.engine.connect() as conn:
        for run_id, kind, n in conn.execute(
                select(op.run_id, op.kind, func.count())
                .where(op.run_id.in_(ids), op.status == "done", op.kind != "add_members")
                .group_by(op.run_id, op.kind)):
            if kind in CATEGORY_OF_KIND:
                changes[run_id][CATEGORY_OF_KIND[kind]] += n
        for run_id, params in conn.execute(
                select(op.run_id, op.params)
                .where(op.run_id.in_(ids), op.status == "done", op.kind == "add_members")):
            changes[run_id]["memberships"] += len((params or {}).get("users", []))
    for run in runs:
        run["changes"] = dict(changes[run["run_id"]])
    return runs


def run_header(store: AuditStore, run_id: str) -> dict[str, Any] | None:
    """The run row with aware times and its operation counts by kind and status."""
    run = store.get_run(run_id)
    if run is None:
        return None
    return {**run, "started_at": aware(run["started_at"]), "ended_at": aware(run["ended_at"]),
            "by_kind": store.operation_status_counts(run_id)}


@dataclass(frozen=True)
class OperationFilter:
    """Filters of the operations table; empty strings mean "any". ``user`` and ``group`` match
    case-insensitively, as substrings, the names an operation touches (and ``user`` an exact
    IDCS id)."""

    user: str = ""
    group: str = ""
    kind: str = ""
    status: str = ""


@dataclass
class OperationPage:
    rows: list[dict[str, Any]]
    matched: int  # rows matching the filter, of which ``rows`` is one page
    total: int  # operations in the run
    kinds: list[str] = field(default_factory=list)  # present in the run, for the filter's choices
    statuses: list[str] = field(default_factory=list)


def users_of(op: dict[str, Any]) -> list[str]:
    """The Bitbucket user names an operation touches."""
    params = op.get("params") or {}
    if op["kind"] == "add_members":
        return list(params.get("users", []))
    if op["kind"] == "remove_membership":
        return [params.get("user", op["target"])]
    if op["kind"] in GROUP_TARGET_KINDS:
        return []
    names = [op["target"]]
    if op["kind"] == "rename_user" and params.get("newName"):
        names.append(params["newName"])
    return names


def group_of(op: dict[str, Any]) -> str | None:
    """The Bitbucket group an operation touches, if any."""
    if op["kind"] in GROUP_TARGET_KINDS:
        return op["target"]
    if op["kind"] == "remove_membership":
        return (op.get("params") or {}).get("group")
    return None


def _matches(op: dict[str, Any], flt: OperationFilter) -> bool:
    if flt.user:
        wanted = key(flt.user.strip())
        if op.get("idcs_id") != flt.user.strip() and not any(
                wanted in key(name) for name in users_of(op)):
            return False
    if flt.group:
        group = group_of(op)
        if group is None or key(flt.group.strip()) not in key(group):
            return False
    return True


def run_operations(store: AuditStore, run_id: str, flt: OperationFilter | None = None, *,
                   offset: int = 0, limit: int = MAX_OPERATIONS) -> OperationPage:
    """One page of the run's operations in plan order, each with ``attempts``, the last
    attempt's ``http_status``, ``error`` and ``attempted_at``, and the ``users``/``group`` it
    touches. Kind and status filter in SQL; user and group by the names above."""
    flt = flt or OperationFilter()
    op, at = t.plan_operations.c, t.operation_attempts.c
    query = select(t.plan_operations).where(op.run_id == run_id)
    if flt.kind:
        query = query.where(op.kind == flt.kind)
    if flt.status:
        query = query.where(op.status == flt.status)
    with store.engine.connect() as conn:
        ops = [dict(r._mapping) for r in conn.execute(query.order_by(op.seq))]
        ops = [o for o in ops if _matches(o, flt)]
        page = ops[max(offset, 0): max(offset, 0) + limit]
        last: dict[str, dict[str, Any]] = {}
        wanted = [o["op_id"] for o in page]
        for start in range(0, len(wanted), 500):
            for a in conn.execute(select(t.operation_attempts).where(
                    at.run_id == run_id, at.op_id.in_(wanted[start:start + 500]))
                    .order_by(at.op_id, at.attempt)):
                last[a.op_id] = dict(a._mapping)  # ordered by attempt: the last one wins
        total = conn.execute(select(func.count()).where(op.run_id == run_id)).scalar() or 0
        kinds = sorted(conn.execute(select(op.kind).where(op.run_id == run_id).distinct())
                       .scalars())
        statuses = sorted(conn.execute(select(op.status).where(op.run_id == run_id).distinct())
                          .scalars())
    rows = []
    for o in page:
        a = last.get(o["op_id"], {})
        rows.append({**o, "planned_at": aware(o.get("planned_at")), "users": users_of(o),
                     "group": group_of(o), "attempts": a.get("attempt", 0),
                     "http_status": a.get("http_status"), "error": a.get("error"),
                     "attempted_at": aware(a.get("at"))})
    return OperationPage(rows, len(ops), total, kinds, statuses)


def value_changes(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """``before``/``after`` as (field, old, new) rows, fields in a stable order; a value that
    is not a mapping is shown under the field ``value``."""
    if not isinstance(before, dict) and not isinstance(after, dict):
        return [] if before is None and after is None else [("value", before, after)]
    old = before if isinstance(before, dict) else {}
    new = after if isinstance(after, dict) else {}
    return [(name, old.get(name), new.get(name)) for name in dict.fromkeys([*old, *new])]


def data_quality(store: AuditStore, run_id: str) -> list[dict[str, Any]]:
    """The run's expectation results, failures first, then by suite and expectation."""
    return sorted(store.dq(run_id), key=lambda r: (bool(r["success"]), r["suite"],
                                                   r["expectation"]))


def quarantined(store: AuditStore, run_id: str) -> list[dict[str, Any]]:
    """The run's quarantined records, by type and id."""
    return sorted(store.quarantined(run_id), key=lambda r: (r["record_type"], r["record_id"]))


def timeline(store: AuditStore, who: str) -> tuple[Any, list[dict[str, Any]]]:
    """One person's history (see :func:`.queries.user_timeline`)."""
    return user_timeline(store, who)
