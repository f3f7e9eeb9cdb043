"""Operations by batch: every apply task reads its batch's operations, in plan order. Without
this index each of a large run's hundred batches scanned all of the run's plan rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_plan_operations_batch", "plan_operations",
                    ["run_id", "phase", "batch", "seq"])


def downgrade() -> None:
    op.drop_index("ix_plan_operations_batch", table_name="plan_operations")
