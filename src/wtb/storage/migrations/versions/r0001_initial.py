"""Initial schema: workflows, batch_runs, cells, attempts, audit_log.

Written by hand to match wtb.storage.schema; PostgreSQL-only indexes (GIN on metrics,
BRIN on append-only time columns) are created only there.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Types spelled out here, not imported from the models: a revision must not change later.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _status_check(values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"status IN ({allowed})", name="status")


def _run_id(*, nullable: bool) -> sa.Column[int]:
    """The run a row belongs to; rows go with their run."""
    return sa.Column(
        "run_id",
        sa.Integer(),
        sa.ForeignKey("batch_runs.id", ondelete="CASCADE"),
        nullable=nullable,
    )


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("spec_digest", sa.String(128), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("namespace", "name", "spec_digest"),
    )
    op.create_table(
        "batch_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_key", sa.String(512), nullable=False, unique=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("uid", sa.String(64), nullable=True),
        sa.Column("generation", sa.BigInteger(), nullable=True),
        sa.Column("spec_digest", sa.String(128), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("workflow_id", sa.Integer(), sa.ForeignKey("workflows.id"), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total_cells", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _status_check(("pending", "running", "succeeded", "failed")),
    )
    op.create_index("ix_batch_runs_namespace_name", "batch_runs", ["namespace", "name"])

    op.create_table(
        "cells",
        sa.Column("id", BigId, primary_key=True),
        _run_id(nullable=False),
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
        _status_check(("succeeded", "failed")),
    )
    op.create_index("ix_cells_run_id_status", "cells", ["run_id", "status"])
    op.create_index(
        "ix_cells_run_id_combo_key_case_id", "cells", ["run_id", "combo_key", "case_id"]
    )

    op.create_table(
        "attempts",
        sa.Column("id", BigId, primary_key=True),
        _run_id(nullable=False),
        sa.Column("cell_key", sa.String(128), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(256), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.UniqueConstraint("run_id", "cell_key", "number"),
        _status_check(("succeeded", "failed", "timeout", "transient")),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        _run_id(nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(512), nullable=True),
        sa.Column("data", Json, nullable=False),
    )
    op.create_index("ix_audit_log_run_id_kind", "audit_log", ["run_id", "kind"])

    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_cells_metrics_gin", "cells", ["metrics"], postgresql_using="gin")
        op.create_index(
            "ix_cells_finished_at_brin", "cells", ["finished_at"], postgresql_using="brin"
        )
        op.create_index(
            "ix_attempts_started_at_brin", "attempts", ["started_at"], postgresql_using="brin"
        )
        op.create_index("ix_audit_log_at_brin", "audit_log", ["at"], postgresql_using="brin")


def downgrade() -> None:
    for table in ("audit_log", "attempts", "cells", "batch_runs", "workflows"):
        op.drop_table(table)
