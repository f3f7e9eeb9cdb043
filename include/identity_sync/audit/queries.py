"""The questions administrators ask of the audit store, as plain functions returning rows.

The CLI (:mod:`.cli`) only formats what these return, so each answer is testable on its own and
usable from a notebook. Names are compared case-insensitively, like Bitbucket compares them.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Text, cast, func, or_, select

from ..model import key
from . import schema as t
from .store import AuditStore

BITBUCKET_STATE = "bitbucket_state"  # the artifact read_bitbucket stores (BitbucketState.to_dict)
GROUP_KINDS = frozenset({"create_group", "set_group_permission", "add_members", "delete_group"})


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def parse_time(text: str) -> datetime:
    """An ISO 8601 time, returned in UTC (SQLite stores UTC without an offset, so every bound
    time must be UTC); without an offset it is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (aware(moment) or moment).astimezone(UTC)


# -- last runs ------------------------------------------------------------------------------------
def runs_overview(store: AuditStore, limit: int = 20) -> list[dict[str, Any]]:
    """The latest runs, newest first, with operation counts by status and quarantined records."""
    runs = store.runs(limit=limit)
    ids = [r["run_id"] for r in runs]
    op = t.plan_operations.c
    q = t.quarantine.c
    by_status: dict[str, dict[str, int]] = defaultdict(dict)
    with store.engine.connect() as conn:
        for run_id, status, n in conn.execute(select(op.run_id, op.status, func.count())
                                              .where(op.run_id.in_(ids))
                                              .group_by(op.run_id, op.status)):
            by_status[run_id][status] = n
        quarantined = dict(conn.execute(select(q.run_id, func.count()).where(q.run_id.in_(ids))
                                        .group_by(q.run_id)).all())
    out = []
    for run in runs:
        statuses = by_status.get(run["run_id"], {})
        out.append({
            "run_id": run["run_id"], "dag_id": run["dag_id"], "trigger": run["trigger"],
            "mode": run["mode"], "dry_run": bool(run["dry_run"]), "status": run["status"],
            "started_at": aware(run["started_at"]), "ended_at": aware(run["ended_at"]),
            "rules_version": run.get("rules_version"), "rules_hash": run["rules_hash"],
            "operations": sum(statuses.values()), "done": statuses.get("done", 0),
            "failed": statuses.get("failed", 0), "pending": statuses.get("planned", 0),
            "quarantined": quarantined.get(run["run_id"], 0), "message": run["message"],
        })
    return out


# -- one user's timeline --------------------------------------------------------------------------
@dataclass
class Identity:
    """Everything one person has been called: IDCS ids and every Bitbucket name (renames)."""

    query: str
    idcs_ids: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)  # casefolded
    current_name: str | None = None


def resolve_identity(conn: Connection, who: str) -> Identity:
    """``who`` is an IDCS id or any Bitbucket name the person has had. A name finds every IDCS
    id that held it (anchors, user operations, renames to it); the ids then give every name they
    had, so an old name, a new name and the IDCS id all find the same history."""
    ident = Identity(who)
    a, op = t.identity_anchors.c, t.plan_operations.c
    renames = [(r.idcs_id, r.params) for r in conn.execute(
        select(op.idcs_id, op.params).where(op.kind == "rename_user"))]
    if conn.execute(select(a.idcs_id).where(a.idcs_id == who)).first() or conn.execute(
            select(op.idcs_id).where(op.idcs_id == who).limit(1)).first():
        ids = {who}
    else:
        ids = set(conn.execute(select(a.idcs_id).where(
            func.lower(a.bitbucket_name) == key(who))).scalars())
        ids |= set(conn.execute(select(op.idcs_id).where(
            func.lower(op.target) == key(who), op.idcs_id.is_not(None),
            op.kind.not_in(GROUP_KINDS))).scalars())
        ids |= {i for i, p in renames if i and key(p["newName"]) == key(who)}
    names = {key(who)} if not ids else set()
    names |= {key(n) for n in conn.execute(select(op.target).where(
        op.idcs_id.in_(sorted(ids)), op.kind.not_in(GROUP_KINDS))).scalars()}
    names |= {key(p["newName"]) for i, p in renames if i in ids}
    anchored = conn.execute(select(a.bitbucket_name).where(a.idcs_id.in_(sorted(ids)))).all()
    names |= {key(row[0]) for row in anchored}
    ident.idcs_ids, ident.names = ids, names
    ident.current_name = anchored[0][0] if len(anchored) == 1 else None
    return ident


def user_timeline(store: AuditStore, who: str) -> tuple[Identity, list[dict[str, Any]]]:
    """Every planned operation touching the user (as account, member, or by IDCS id), each
    attempt at it, and each time the user was quarantined, in time order."""
    op, at, r, q = (t.plan_operations.c, t.operation_attempts.c, t.sync_runs.c,
                    t.quarantine.c)
    with store.engine.connect() as conn:
        ident = resolve_identity(conn, who)
        names = sorted(ident.names)
        by_name = op.idcs_id.is_(None) | op.idcs_id.in_(sorted(ident.idcs_ids))
        # Member lists are JSON: match the name as stored, ASCII-escaped or not, then confirm.
        forms = {form for name in names for form in (name, json.dumps(name)[1:-1])}
        member_ops = [func.lower(cast(op.params, Text)).contains(form, autoescape=True)
                      for form in sorted(forms)]
        rows = conn.execute(
            select(t.plan_operations, r.started_at.label("run_started"))
            .outerjoin(t.sync_runs, r.run_id == op.run_id)
            .where(or_(
                op.idcs_id.in_(sorted(ident.idcs_ids)),
                (func.lower(op.target).in_(names) & op.kind.not_in(GROUP_KINDS) & by_name),
                (op.kind == "add_members") & or_(*member_ops),
            ))).all()
        ops = [dict(row._mapping) for row in rows if _touches(dict(row._mapping), ident)]
        keys = [(o["run_id"], o["op_id"]) for o in ops]
        attempts: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for run_id in {k[0] for k in keys}:
            wanted = [k[1] for k in keys if k[0] == run_id]
            for a in conn.execute(select(t.operation_attempts).where(
                    at.run_id == run_id, at.op_id.in_(wanted)).order_by(at.attempt)):
                attempts[(run_id, a.op_id)].append(dict(a._mapping))
        quarantined = conn.execute(
            select(t.quarantine, r.started_at).outerjoin(t.sync_runs, r.run_id == q.run_id)
            .where(q.record_type == "user", q.record_id.in_(sorted(ident.idcs_ids)))).all()
    events: list[dict[str, Any]] = []
    for o in ops:
        planned = aware(o["planned_at"] or o["run_started"] or o["updated_at"])
        base = {"run_id": o["run_id"], "op_id": o["op_id"], "kind": o["kind"],
                "target": o["target"], "reason": o["reason"], "before": o["before"],
                "after": _after(o, ident), "params": _params(o, ident)}
        events.append({**base, "at": planned, "event": "planned", "status": o["status"],
                       "attempt": None, "http_status": None, "error": None, "seq": o["seq"]})
        for a in attempts.get((o["run_id"], o["op_id"]), []):
            events.append({**base, "at": aware(a["at"]), "event": f"attempt {a['attempt']}",
                           "status": a["outcome"], "attempt": a["attempt"],
                           "http_status": a["http_status"], "error": a["error"],
                           "seq": o["seq"]})
    for row in quarantined:
        m = row._mapping
        events.append({"run_id": m["run_id"], "op_id": None, "kind": "quarantine", "params": None,
                       "target": m["record_id"], "reason": m["reason"], "before": None,
                       "after": {"expectation": m["expectation"], "value": m["value"]},
                       "at": aware(m["started_at"]), "event": "quarantined",
                       "status": "quarantined", "attempt": None, "http_status": None,
                       "error": None, "seq": -1})
    far = datetime.min.replace(tzinfo=UTC)
    events.sort(key=lambda e: (e["at"] or far, e["run_id"], e["seq"], e["attempt"] or 0))
    for e in events:
        del e["seq"]
    return ident, events


def _touches(o: dict[str, Any], ident: Identity) -> bool:
    """The SQL prefilter on member lists is a substring match: confirm it exactly."""
    if o["kind"] == "add_members" and o["idcs_id"] not in ident.idcs_ids:
        return any(key(u) in ident.names for u in o["params"].get("users", []))
    return True


def _params(o: dict[str, Any], ident: Identity) -> Any:
    """A batch add's full member list is noise in one user's timeline: keep only them."""
    if o["kind"] == "add_members":
        return {**o["params"], "users": [u for u in o["params"].get("users", [])
                                         if key(u) in ident.names]}
    return o["params"]


def _after(o: dict[str, Any], ident: Identity) -> Any:
    """For a batch add, only this user's part of the member list is relevant."""
    if o["kind"] == "add_members":
        return {"group": o["target"],
                "members": [u for u in o["params"].get("users", []) if key(u) in ident.names]}
    return o["after"]


# -- who was in a group at a time -----------------------------------------------------------------
def group_members_at(store: AuditStore, group: str, at: datetime) -> dict[str, Any]:
    """Members of ``group`` at ``at`` as the sync saw them: the latest Bitbucket state snapshot
    taken at or before ``at``, plus every operation completed after it up to ``at``."""
    art, r = t.run_artifacts.c, t.sync_runs.c
    gkey = key(group)
    at = (aware(at) or at).astimezone(UTC)
    with store.engine.connect() as conn:
        snap = conn.execute(
            select(art.run_id, art.created_at, art.payload)
            .where(art.name == BITBUCKET_STATE, art.created_at <= at)
            .order_by(art.created_at.desc()).limit(1)).first()
        if snap is None:
            raise LookupError(f"no Bitbucket state snapshot at or before {at.isoformat()}: the "
                              "first run after that time is the earliest answer possible")
        state = json.loads(gzip.decompress(snap.payload))
        snap_at = aware(snap.created_at)
        applied = _applied_between(conn, snap_at, at)
        dag_started = conn.execute(select(r.started_at).where(r.run_id == snap.run_id)).scalar()
    groups = {key(g): g for g in state.get("groups", [])}
    memberships = {key(g): m for g, m in state.get("memberships", {}).items()}
    exists = gkey in groups
    known = gkey in memberships or not exists
    members = {key(m): m for m in memberships.get(gkey, [])}
    changes: list[dict[str, Any]] = []
    for change in applied:
        p, kind = change["params"], change["kind"]
        effect: str | None = None
        if kind == "create_group" and key(p.get("name", change["target"])) == gkey:
            exists, effect = True, "group created"
        elif kind == "delete_group" and key(p.get("name", change["target"])) == gkey:
            exists, members, known, effect = False, {}, True, "group deleted"
        elif kind == "add_members" and key(p.get("group", change["target"])) == gkey:
            added = [u for u in p.get("users", []) if key(u) not in members]
            members.update({key(u): u for u in p.get("users", [])})
            effect = f"added {', '.join(added)}" if added else None
        elif kind == "remove_membership" and key(p.get("group", "")) == gkey:
            if members.pop(key(p.get("user", change["target"])), None) is not None:
                effect = f"removed {p.get('user', change['target'])}"
        elif kind == "rename_user" and key(p["name"]) in members:
            members.pop(key(p["name"]))
            members[key(p["newName"])] = p["newName"]
            effect = f"renamed {p['name']} → {p['newName']}"
        elif kind == "delete_user" and key(p.get("name", change["target"])) in members:
            members.pop(key(p.get("name", change["target"])))
            effect = f"deleted user {p.get('name', change['target'])}"
        if effect:
            changes.append({"at": change["at"], "run_id": change["run_id"], "kind": kind,
                            "change": effect, "reason": change["reason"]})
    return {
        "group": groups.get(gkey, group), "at": at, "exists": exists, "known": known,
        "members": sorted(members.values(), key=key) if known else None,
        "snapshot_run_id": snap.run_id, "snapshot_at": snap_at,
        "snapshot_run_started_at": aware(dag_started), "changes_after_snapshot": changes,
    }


def _applied_between(conn: Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Operations whose first successful attempt falls in (start, end], in that order."""
    at, op = t.operation_attempts.c, t.plan_operations.c
    done = (select(at.run_id, at.op_id, func.min(at.at).label("done_at"))
            .where(at.outcome == "done").group_by(at.run_id, at.op_id).subquery())
    rows = conn.execute(
        select(op.run_id, op.kind, op.target, op.params, op.reason, done.c.done_at)
        .join(done, (done.c.run_id == op.run_id) & (done.c.op_id == op.op_id))
        .where(done.c.done_at > start, done.c.done_at <= end)
        .order_by(done.c.done_at, op.seq)).all()
    return [{"run_id": r.run_id, "kind": r.kind, "target": r.target, "params": r.params,
             "reason": r.reason, "at": aware(r.done_at)} for r in rows]


# -- what one run changed -------------------------------------------------------------------------
def run_changes(store: AuditStore, run_id: str) -> dict[str, Any]:
    """The run, its completed operations grouped by kind (with reasons), and its failures with
    the HTTP status and error of their last attempt."""
    run = store.get_run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id!r} in the audit store")
    plan = store.plan(run_id)
    last_attempt: dict[str, dict[str, Any]] = {}
    for a in store.attempts(run_id):
        last_attempt[a["op_id"]] = a  # ordered by attempt: the last one wins
    applied: dict[str, list[dict[str, Any]]] = defaultdict(list)
    failures, statuses = [], defaultdict(int)
    for o in plan:
        statuses[o["status"]] += 1
        last = last_attempt.get(o["op_id"], {})
        item = {"target": o["target"], "reason": o["reason"], "before": o["before"],
                "after": o["after"], "params": o["params"]}
        if o["status"] == "done":
            applied[o["kind"]].append({**item, "http_status": last.get("http_status"),
                                       "note": last.get("error")})
        elif o["status"] == "failed":
            failures.append({**item, "kind": o["kind"], "http_status": last.get("http_status"),
                             "error": last.get("error"), "attempts": last.get("attempt", 0)})
    return {"run": {**run, "started_at": aware(run["started_at"]),
                    "ended_at": aware(run["ended_at"])},
            "statuses": dict(statuses), "applied": dict(applied), "failures": failures}


# -- quarantine and export ------------------------------------------------------------------------
def latest_run_id(store: AuditStore) -> str | None:
    runs = store.runs(limit=1)
    return runs[0]["run_id"] if runs else None


EXPORT_COLUMNS = ["run_id", "seq", "op_id", "phase", "batch", "kind", "target", "idcs_id",
                  "reason", "before", "after", "status", "planned_at", "attempt", "outcome",
                  "http_status", "error", "duration_ms", "attempted_at"]


def export_rows(store: AuditStore, run_id: str) -> list[dict[str, Any]]:
    """One row per attempt (an operation never attempted gets one row with empty attempt
    columns), in plan order: the run's full record as a flat table."""
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in store.attempts(run_id):
        attempts[a["op_id"]].append(a)
    rows = []
    for o in store.plan(run_id):
        base = {c: o.get(c) for c in EXPORT_COLUMNS if c in o}
        base["before"] = json.dumps(o["before"]) if o["before"] is not None else ""
        base["after"] = json.dumps(o["after"]) if o["after"] is not None else ""
        base["planned_at"] = aware(o.get("planned_at"))
        for a in attempts.get(o["op_id"]) or [{}]:
            rows.append({**base, "attempt": a.get("attempt"), "outcome": a.get("outcome"),
                         "http_status": a.get("http_status"), "error": a.get("error"),
                         "duration_ms": a.get("duration_ms"), "attempted_at": aware(a.get("at"))})
    return rows
