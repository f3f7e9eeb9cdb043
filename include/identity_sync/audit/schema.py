"""Audit tables. Every table has a natural key so a retried or cleared task upserts, never
duplicates (design invariant 6). No column ever holds a secret."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

sync_runs = Table(
    "sync_runs", metadata,
    Column("run_id", String(250), primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("trigger", String(50), nullable=False),
    Column("mode", String(50), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("status", String(30), nullable=False),
    Column("rules_hash", String(64)),
    Column("counts", JSON),
    Column("message", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
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
    Column("status", String(20), nullable=False),  # planned | done | failed | skipped
    Column("updated_at", DateTime(timezone=True), nullable=False),
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
)

identity_anchors = Table(
    "identity_anchors", metadata,
    Column("idcs_id", String(100), primary_key=True),
    Column("bitbucket_name", String(255), nullable=False),
    Column("first_run_id", String(250), nullable=False),
    Column("last_run_id", String(250), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
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
)
