"""Initial audit schema: the tables as the first releases created them with ``create_all``.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("trigger", sa.String(50), nullable=False),
        sa.Column("mode", sa.String(50), nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("rules_hash", sa.String(64)),
        sa.Column("counts", sa.JSON),
        sa.Column("message", sa.Text),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("ended_at", TZ),
    )
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "plan_operations",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("op_id", sa.String(100), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("batch", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("idcs_id", sa.String(100)),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "operation_attempts",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("op_id", sa.String(100), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_table(
        "identity_anchors",
        sa.Column("idcs_id", sa.String(100), primary_key=True),
        sa.Column("bitbucket_name", sa.String(255), nullable=False),
        sa.Column("first_run_id", sa.String(250), nullable=False),
        sa.Column("last_run_id", sa.String(250), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "dq_results",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("suite", sa.String(100), primary_key=True),
        sa.Column("expectation", sa.String(250), primary_key=True),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("unexpected_count", sa.Integer, nullable=False),
        sa.Column("sample", sa.JSON),
    )
    op.create_table(
        "quarantine",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("record_type", sa.String(30), primary_key=True),
        sa.Column("record_id", sa.String(255), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("expectation", sa.String(250)),
        sa.Column("value", sa.Text),
    )


def downgrade() -> None:
    for table in ("quarantine", "dq_results", "identity_anchors", "operation_attempts",
                  "plan_operations", "run_artifacts", "sync_runs"):
        op.drop_table(table)
