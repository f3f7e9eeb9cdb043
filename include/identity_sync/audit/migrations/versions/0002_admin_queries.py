"""What administrators' questions need: the rules version per run, when an operation was first
planned, and indexes for operations by target / IDCS id, attempts by time, anchors by Bitbucket
name, quarantine by record, and runs by start / end (retention).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_sync_runs_started_at", "sync_runs", ["started_at"]),
    ("ix_sync_runs_ended_at", "sync_runs", ["ended_at"]),
    ("ix_plan_operations_target", "plan_operations", ["target"]),
    ("ix_plan_operations_idcs_id", "plan_operations", ["idcs_id"]),
    ("ix_operation_attempts_at", "operation_attempts", ["at"]),
    ("ix_identity_anchors_bitbucket_name", "identity_anchors", ["bitbucket_name"]),
    ("ix_quarantine_record_id", "quarantine", ["record_id"]),
]


def upgrade() -> None:
    # Plain ADD COLUMN (nullable): no table rebuild on SQLite, no rewrite on PostgreSQL.
    op.add_column("sync_runs", sa.Column("rules_version", sa.String(100)))
    op.add_column("plan_operations", sa.Column("planned_at", sa.DateTime(timezone=True)))
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("plan_operations") as batch:
        batch.drop_column("planned_at")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("rules_version")
