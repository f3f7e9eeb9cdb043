"""Audit tables. Every table has a natural key so a retried or cleared task upserts, never
duplicates (design invariant 6). No column ever holds a secret.

This module is the schema's source of truth for the code; ``migrations/versions`` is its history.
A test runs Alembic's autogenerate comparison between the two, so they cannot drift apart.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# Alembic's version table, under its own name so the audit schema never collides with another
# Alembic-managed application (Airflow's metadata DB uses ``alembic_version``). Declared here so a
# ``metadata.drop_all`` wipes the whole audit schema; Alembic itself creates and maintains it, and
# autogenerate ignores it.
VERSION_TABLE = "idsync_audit_version"
schema_version = Table(
    VERSION_TABLE, metadata,
    Column("version_num", String(32), primary_key=True),
)

sync_runs = Table(
    "sync_runs", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("trigger", String(50), nullable=False),
    Column("mode", String(50), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("status", String(30), nullable=False),
    Column("rules_hash", String(64)),
    Column("rules_version", String(100)),  # the rules file's declared version, when it has one
    Column("counts", JSON),
    Column("message", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    # Run state that decides later runs (revision 0005): real columns, written in transactions,
    # never read-modify-written inside the JSON ``counts``.
    Column("data_as_of", DateTime(timezone=True)),  # when its IDCS extract began: data age
    Column("watermark", String(40)),  # incremental: meta.lastModified it extracted from
    Column("users_in_scope", Integer),  # the extract's users: the next run's shrink baseline
    Column("failed_streak", Integer),  # failed runs in a row of its DAG, this one included
    Column("approved_by", String(250)),  # who approved a plan a safety gate stopped
    Index("ix_sync_runs_started_at", "started_at"),
    Index("ix_sync_runs_ended_at", "ended_at"),
    Index("ix_sync_runs_history", "dag_id", "status", "mode", "started_at"),
)

run_artifacts = Table(
    "run_artifacts", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("rows", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),  # gzip-compressed JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
)

plan_operations = Table(
    "plan_operations", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("op_id", String(100), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("phase", String(20), nullable=False),
    Column("batch", Integer, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("target", String(255), nullable=False),
    Column("idcs_id", String(100)),
    Column("params", JSON, nullable=False),
    Column("before", JSON),
    Column("after", JSON),
    Column("reason", Text, nullable=False),
    # planned | started | done | failed | skipped | superseded | conflict
    Column("status", String(20), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("planned_at", DateTime(timezone=True)),  # first time the plan held it; never reset
    # Revision 0005: the identity chain the operation belongs to (never split across batches)
    # and the identities it changes (user:<IDCS id> / group:<key>; for add_members one per user,
    # in the order of params.users): what per-identity convergence compares.
    Column("lane", String(300)),
    Column("identities", JSON),
    Index("ix_plan_operations_target", "target"),
    Index("ix_plan_operations_idcs_id", "idcs_id"),
    Index("ix_plan_operations_batch", "run_id", "phase", "batch", "seq"),
)

operation_attempts = Table(
    "operation_attempts", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("op_id", String(100), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("outcome", String(20), nullable=False),  # done | failed
    Column("http_status", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_operation_attempts_at", "at"),
)

identity_anchors = Table(
    "identity_anchors", metadata,
    Column("idcs_id", String(100), primary_key=True),
    Column("bitbucket_name", String(255), nullable=False),
    Column("first_run_id", String(250), nullable=False),
    Column("last_run_id", String(250), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_identity_anchors_bitbucket_name", "bitbucket_name"),
)

dq_results = Table(
    "dq_results", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("suite", String(100), primary_key=True),
    Column("expectation", String(250), primary_key=True),
    Column("severity", String(20), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("unexpected_count", Integer, nullable=False),
    Column("sample", JSON),
)

quarantine = Table(
    "quarantine", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("record_type", String(30), primary_key=True),
    Column("record_id", String(255), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("expectation", String(250)),
    Column("value", Text),
    Index("ix_quarantine_record_id", "record_id"),
)

# -- IDCS extracts (revision 0003) ------------------------------------------------------------------
# What each run's extract cost and saw: the totals, per-endpoint request counts, and the ids of the
# users it listed (the baseline an incremental run diffs against to find deletions).
idcs_extracts = Table(
    "idcs_extracts", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("mode", String(20), nullable=False),  # full | incremental | subset
    Column("listing", Text, nullable=False),  # the base user listing: "all" or "filter:<filter>"
    Column("scope", Text, nullable=False),
    Column("app_id", String(100)),
    Column("membership_strategy", String(20)),  # user_side | group_side
    Column("since", String(40)),  # incremental: meta.lastModified watermark
    Column("users_seen", Integer, nullable=False),
    Column("users_in_scope", Integer, nullable=False),
    Column("groups", Integer, nullable=False),
    Column("memberships", Integer, nullable=False),
    Column("deleted", Integer, nullable=False),  # users found gone since the baseline
    Column("requests", Integer, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("throttled", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("waited_seconds", Float, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_idcs_extracts_created_at", "created_at"),
)

idcs_extract_endpoints = Table(
    "idcs_extract_endpoints", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("endpoint", String(200), primary_key=True),  # e.g. "GET /admin/v1/Groups/{id}"
    Column("requests", Integer, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("throttled", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
)

idcs_user_ids = Table(
    "idcs_user_ids", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("idcs_id", String(100), primary_key=True),
    Column("state", String(10), nullable=False),  # present | deleted
)


# -- per-identity convergence and group ownership (revision 0005) ------------------------------------
# One row per identity a sync manages: the run whose plan for it is the newest by IDCS data age
# (compare-and-set at planning), the run with a write in flight on it, and the last write landed.
identity_state = Table(
    "identity_state", metadata,
    Column("identity", String(300), primary_key=True),  # user:<IDCS id> | group:<key>
    Column("intent_run", String(250), nullable=False),
    Column("intent_data_as_of", DateTime(timezone=True), nullable=False),
    Column("intent_at", DateTime(timezone=True), nullable=False),
    Column("inflight_run", String(250)),
    Column("inflight_since", DateTime(timezone=True)),
    Column("applied_run", String(250)),
    Column("applied_at", DateTime(timezone=True)),
    Index("ix_identity_state_intent_run", "intent_run"),
    Index("ix_identity_state_inflight_run", "inflight_run"),
)

# Bitbucket groups the sync created: with the groups the rules name, the only groups it manages.
owned_groups = Table(
    "owned_groups", metadata,
    Column("group_key", String(255), primary_key=True),  # casefolded name
    Column("name", String(255), nullable=False),
    Column("created_by_run", String(250), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
