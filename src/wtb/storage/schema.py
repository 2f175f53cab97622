"""The result store's tables as SQLAlchemy 2 typed models, portable across SQLite and PostgreSQL.

The initial Alembic revision creates exactly these tables; a test checks that they agree.
Indexes follow the access paths: B-tree for lookups by run, status, combination and case;
on PostgreSQL also GIN on the JSON metrics and BRIN on the append-only time columns.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("pending", "running", "succeeded", "failed")
CELL_STATUSES = ("succeeded", "failed")
ATTEMPT_STATUSES = ("succeeded", "failed", "timeout", "transient")

Json: TypeEngine[Any] = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
"""JSON everywhere, JSONB on PostgreSQL (indexable, compact); Python None is SQL NULL."""

BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit ids; SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY."""


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes in and out, on every backend.

    PostgreSQL keeps `timestamptz`; SQLite keeps text without an offset, so values are
    stored as UTC and read back with the UTC zone attached. Naive datetimes are refused:
    their zone is unknown.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


POSTGRESQL_ONLY_INDEXES = frozenset(
    {
        "ix_cells_metrics_gin",
        "ix_cells_finished_at_brin",
        "ix_attempts_started_at_brin",
        "ix_audit_log_at_brin",
    }
)


def _postgresql_only(name: str, column: str, using: str) -> Index:
    if name not in POSTGRESQL_ONLY_INDEXES:
        raise ValueError(f"list {name!r} in POSTGRESQL_ONLY_INDEXES")
    return Index(name, column, postgresql_using=using).ddl_if(dialect="postgresql")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class WorkflowRow(Base):
    """A workflow spec as it was when a batch ran (one row per distinct spec)."""

    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("namespace", "name", "spec_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253))
    spec_digest: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class BatchRunRow(Base):
    """One run of a BatchTest generation; `run_key` makes begin_run idempotent."""

    __tablename__ = "batch_runs"
    __table_args__ = (
        _one_of("status", RUN_STATUSES, "status"),
        Index("ix_batch_runs_namespace_name", "namespace", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_key: Mapped[str] = mapped_column(String(512), unique=True)
    namespace: Mapped[str] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253))
    uid: Mapped[str | None] = mapped_column(String(64))
    generation: Mapped[int | None] = mapped_column(BigInteger)
    spec_digest: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(Json)
    """The full resolved job: a driver can reload and resume the run from it alone."""
    workflow_id: Mapped[int | None] = mapped_column(ForeignKey("workflows.id"))
    status: Mapped[str] = mapped_column(String(16))
    total_cells: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    error: Mapped[str | None] = mapped_column(Text)


class CellRow(Base):
    """One recorded cell; UNIQUE(run_id, cell_key) is what makes recording exactly-once."""

    __tablename__ = "cells"
    __table_args__ = (
        UniqueConstraint("run_id", "cell_key"),
        _one_of("status", CELL_STATUSES, "status"),
        Index("ix_cells_run_id_status", "run_id", "status"),
        Index("ix_cells_run_id_combo_key_case_id", "run_id", "combo_key", "case_id"),
        _postgresql_only("ix_cells_metrics_gin", "metrics", "gin"),
        _postgresql_only("ix_cells_finished_at_brin", "finished_at", "brin"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("batch_runs.id", ondelete="CASCADE"))
    cell_key: Mapped[str] = mapped_column(String(128))
    combo_key: Mapped[str] = mapped_column(String(128))
    combination: Mapped[dict[str, str]] = mapped_column(Json)
    case_id: Mapped[str] = mapped_column(String(512))
    repeat: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    output: Mapped[dict[str, Any] | None] = mapped_column(Json)
    metrics: Mapped[dict[str, float | None]] = mapped_column(Json)
    evaluator_errors: Mapped[dict[str, str]] = mapped_column(Json)
    latency_ms: Mapped[float] = mapped_column(Float)
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    cost: Mapped[float | None] = mapped_column(Float)
    error_type: Mapped[str | None] = mapped_column(String(256))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AttemptRow(Base):
    """One attempt at a cell; written with its cell, so a cell's history is complete or absent."""

    __tablename__ = "attempts"
    __table_args__ = (
        UniqueConstraint("run_id", "cell_key", "number"),
        _one_of("status", ATTEMPT_STATUSES, "status"),
        _postgresql_only("ix_attempts_started_at_brin", "started_at", "brin"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("batch_runs.id", ondelete="CASCADE"))
    cell_key: Mapped[str] = mapped_column(String(128))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(256))
    error_message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    duration_ms: Mapped[float] = mapped_column(Float)


class AuditRow(Base):
    """Every event of the bus, append-only."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_run_id_kind", "run_id", "kind"),
        _postgresql_only("ix_audit_log_at_brin", "at", "brin"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("batch_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(512))
    data: Mapped[dict[str, Any]] = mapped_column(Json)
