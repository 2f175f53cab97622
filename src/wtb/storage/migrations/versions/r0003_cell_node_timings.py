"""Cell node timings and attempt run ids: `cells.nodes` (per-node ms, calls and tokens of
the cell's last attempt, JSON) and `attempts.root_run_id` (the LangChain run id of the attempt's
graph invocation, to find its trace). Both nullable: rows recorded before have neither.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Types spelled out here, not imported from the models: a revision must not change later.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("cells", sa.Column("nodes", Json, nullable=True))
    op.add_column("attempts", sa.Column("root_run_id", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("root_run_id")
    with op.batch_alter_table("cells") as batch:
        batch.drop_column("nodes")
