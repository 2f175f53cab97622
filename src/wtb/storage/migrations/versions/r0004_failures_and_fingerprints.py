"""Failures told and results reused honestly.

- `attempts.node`, `attempts.traceback`: the node an attempt failed in (its path, as
  `cells.nodes` names nodes) and the bounded traceback of its error.
- `cells.error_node`: the node the cell's last attempt failed in, for grouping failures.
- `cells.fingerprint`: a content hash of everything that determines the cell's result (the
  source of the code it runs, its node settings, its case and repeat; not its limits, not
  its evaluators), so a later run may reuse the result while that is unchanged.
- `cells.reused_from`: the run a reused result was first recorded in (NULL: run here).
- `batch_runs.code_fingerprint`: the fingerprint of the code a run was planned with; a
  driver never resumes a run whose code differs.
- Indexes: cells by fingerprint (reuse lookups), attempts by root run id (trace lookups).

All nullable: rows recorded before have none of them (and are never reused).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("node", sa.String(512), nullable=True))
    op.add_column("attempts", sa.Column("traceback", sa.Text(), nullable=True))
    op.add_column("cells", sa.Column("error_node", sa.String(512), nullable=True))
    op.add_column("cells", sa.Column("fingerprint", sa.String(64), nullable=True))
    op.add_column("cells", sa.Column("reused_from", sa.Integer(), nullable=True))
    op.add_column("batch_runs", sa.Column("code_fingerprint", sa.String(64), nullable=True))
    op.create_index("ix_cells_fingerprint", "cells", ["fingerprint"])
    op.create_index("ix_attempts_root_run_id", "attempts", ["root_run_id"])


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite >= 3.35 has it): a batch copy of `batch_runs` would drop the
    # table, and SQLite's ON DELETE CASCADE would take every run's cells with it.
    op.drop_index("ix_attempts_root_run_id", table_name="attempts")
    op.drop_index("ix_cells_fingerprint", table_name="cells")
    op.drop_column("batch_runs", "code_fingerprint")
    for column in ("reused_from", "fingerprint", "error_node"):
        op.drop_column("cells", column)
    for column in ("traceback", "node"):
        op.drop_column("attempts", column)
