"""IDCS extract records: per-run totals and request metrics, per-endpoint metrics, and the user
ids each run listed (the baseline incremental runs diff against to find deleted users).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _metric_columns() -> list[sa.Column]:
    return [
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("throttled", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "idcs_extracts",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("listing", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("app_id", sa.String(100)),
        sa.Column("membership_strategy", sa.String(20)),
        sa.Column("since", sa.String(40)),
        sa.Column("users_seen", sa.Integer, nullable=False),
        sa.Column("users_in_scope", sa.Integer, nullable=False),
        sa.Column("groups", sa.Integer, nullable=False),
        sa.Column("memberships", sa.Integer, nullable=False),
        sa.Column("deleted", sa.Integer, nullable=False),
        *_metric_columns(),
        sa.Column("waited_seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idcs_extracts_created_at", "idcs_extracts", ["created_at"])
    op.create_table(
        "idcs_extract_endpoints",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("endpoint", sa.String(200), primary_key=True),
        *_metric_columns(),
    )
    op.create_table(
        "idcs_user_ids",
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("idcs_id", sa.String(100), primary_key=True),
        sa.Column("state", sa.String(10), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("idcs_user_ids")
    op.drop_table("idcs_extract_endpoints")
    op.drop_index("ix_idcs_extracts_created_at", table_name="idcs_extracts")
    op.drop_table("idcs_extracts")
