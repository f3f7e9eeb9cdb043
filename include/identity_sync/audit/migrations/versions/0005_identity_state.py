"""Per-identity convergence, group ownership and run state in real columns.

- ``identity_state``: per user / group, the newest planned intent (compare-and-set by IDCS data
  age), the write in flight and the last write landed;
- ``owned_groups``: the Bitbucket groups the sync created;
- ``plan_operations.lane`` / ``identities``: each operation's identity chain and subjects;
- ``sync_runs``: data age, watermark, shrink baseline, failure streak and approver as columns,
  with an index for the history queries (last successful full run per DAG, failure streak).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RUN_COLUMNS = (
    sa.Column("data_as_of", sa.DateTime(timezone=True)),
    sa.Column("watermark", sa.String(40)),
    sa.Column("users_in_scope", sa.Integer()),
    sa.Column("failed_streak", sa.Integer()),
    sa.Column("approved_by", sa.String(250)),
)


def upgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        for column in RUN_COLUMNS:
            batch.add_column(column.copy())
    op.create_index("ix_sync_runs_history", "sync_runs",
                    ["dag_id", "status", "mode", "started_at"])
    with op.batch_alter_table("plan_operations") as batch:
        batch.add_column(sa.Column("lane", sa.String(300)))
        batch.add_column(sa.Column("identities", sa.JSON()))
    op.create_table(
        "identity_state",
        sa.Column("identity", sa.String(300), primary_key=True),
        sa.Column("intent_run", sa.String(250), nullable=False),
        sa.Column("intent_data_as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("intent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inflight_run", sa.String(250)),
        sa.Column("inflight_since", sa.DateTime(timezone=True)),
        sa.Column("applied_run", sa.String(250)),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_identity_state_intent_run", "identity_state", ["intent_run"])
    op.create_index("ix_identity_state_inflight_run", "identity_state", ["inflight_run"])
    op.create_table(
        "owned_groups",
        sa.Column("group_key", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_by_run", sa.String(250), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("owned_groups")
    op.drop_index("ix_identity_state_inflight_run", table_name="identity_state")
    op.drop_index("ix_identity_state_intent_run", table_name="identity_state")
    op.drop_table("identity_state")
    with op.batch_alter_table("plan_operations") as batch:
        batch.drop_column("identities")
        batch.drop_column("lane")
    op.drop_index("ix_sync_runs_history", table_name="sync_runs")
    with op.batch_alter_table("sync_runs") as batch:
        for column in reversed(RUN_COLUMNS):
            batch.drop_column(column.name)
