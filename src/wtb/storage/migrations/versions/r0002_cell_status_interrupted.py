"""Cell status `interrupted`: a graph stopped at interrupt() with no scripted answer left.

Only the CHECK constraint on `cells.status` changes. PostgreSQL drops and adds it. SQLite
cannot alter a constraint, so the table is recreated by hand (renamed aside, created anew,
rows copied, the old one dropped, its indexes created again), not with Alembic's batch
mode: that orders the recreated table's constraints differently from run to run, and a
new SQLite store's schema (`wtb.storage.sqlite_schema`) must be exactly what this makes.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out here, not imported from the models: a revision must not change later.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_CHECK = "ck_cells_status"
_BEFORE = ("succeeded", "failed")
_AFTER = ("succeeded", "failed", "interrupted")
_ASIDE = "_wtb_cells_before_0002"


def _condition(values: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{v}'" for v in values))


def _recreate_sqlite(values: tuple[str, ...]) -> None:
    op.drop_index("ix_cells_run_id_status", "cells")
    op.drop_index("ix_cells_run_id_combo_key_case_id", "cells")
    op.rename_table("cells", _ASIDE)
    op.create_table(
        "cells",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "run_id",
            sa.Integer(),
            sa.ForeignKey("batch_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("cell_key", sa.String(128), nullable=False),
        sa.Column("combo_key", sa.String(128), nullable=False),
        sa.Column("combination", Json, nullable=False),
        sa.Column("case_id", sa.String(512), nullable=False),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output", Json, nullable=True),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("evaluator_errors", Json, nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("error_type", sa.String(256), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("run_id", "cell_key"),
        sa.CheckConstraint(_condition(values), name="status"),
    )
    # Same columns in the same order; the name is a constant of this module.
    op.execute(f"INSERT INTO cells SELECT * FROM {_ASIDE}")  # noqa: S608
    op.drop_table(_ASIDE)
    op.create_index("ix_cells_run_id_status", "cells", ["run_id", "status"])
    op.create_index(
        "ix_cells_run_id_combo_key_case_id", "cells", ["run_id", "combo_key", "case_id"]
    )


def _replace_check(values: tuple[str, ...]) -> None:
    if op.get_context().dialect.name == "sqlite":
        _recreate_sqlite(values)
        return
    op.drop_constraint(op.f(_CHECK), "cells", type_="check")
    op.create_check_constraint(op.f(_CHECK), "cells", _condition(values))


def upgrade() -> None:
    _replace_check(_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM cells WHERE status = 'interrupted'")
    _replace_check(_BEFORE)
