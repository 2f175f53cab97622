"""The result store's tables as SQLAlchemy Core tables, portable across SQLite and PostgreSQL.

Core, not the ORM: the store only runs statements, and the ORM's import alone would cost
every `wtb run` more than its cells. Importing this module loads no database dialect.

The Alembic revisions create exactly these tables; a test checks that they agree.
Indexes follow the access paths: B-tree for lookups by run, status, combination and case;
on PostgreSQL also GIN on the JSON metrics and BRIN on the append-only time columns.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.types import TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATUSES = ("pending", "running", "succeeded", "failed")
CELL_STATUSES = ("succeeded", "failed", "interrupted")
ATTEMPT_STATUSES = ("succeeded", "failed", "timeout", "transient")


class Json(TypeDecorator[Any]):
    """JSON everywhere, JSONB on PostgreSQL (indexable, compact); Python None is SQL NULL.

    A decorator rather than `JSON().with_variant(JSONB(), "postgresql")`: building JSONB
    imports SQLAlchemy's whole PostgreSQL dialect, which a SQLite store never needs. JSON's
    operators (`column["key"].as_float()`) are those of the JSON type it decorates.
    """

    impl = JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(JSON(none_as_null=True))


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


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


metadata = MetaData(naming_convention=NAMING_CONVENTION)

workflows = Table(
    "workflows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("spec_digest", String(128), nullable=False),
    Column("spec", Json, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("namespace", "name", "spec_digest"),
)
"""A workflow spec as it was when a batch ran (one row per distinct spec)."""

batch_runs = Table(
    "batch_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_key", String(512), nullable=False, unique=True),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("uid", String(64)),
    Column("generation", BigInteger),
    Column("spec_digest", String(128), nullable=False),
    # The full resolved job: a driver can reload and resume the run from it alone.
    Column("spec", Json, nullable=False),
    Column("workflow_id", Integer, ForeignKey("workflows.id")),
    Column("status", String(16), nullable=False),
    Column("total_cells", BigInteger, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("error", Text),
    # The fingerprint of the code the run was planned with (wtb.runs.fingerprints).
    Column("code_fingerprint", String(64)),
    _one_of("status", RUN_STATUSES, "status"),
    Index("ix_batch_runs_namespace_name", "namespace", "name"),
)
"""One run of a BatchTest generation; `run_key` makes begin_run idempotent."""


def _run_id(*, nullable: bool) -> Column[int]:
    """The run a row belongs to; rows go with their run."""
    return Column(
        "run_id", Integer, ForeignKey("batch_runs.id", ondelete="CASCADE"), nullable=nullable
    )


cells = Table(
    "cells",
    metadata,
    Column("id", BigId, primary_key=True),
    _run_id(nullable=False),
    Column("cell_key", String(128), nullable=False),
    Column("combo_key", String(128), nullable=False),
    Column("combination", Json, nullable=False),
    Column("case_id", String(512), nullable=False),
    Column("repeat", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("output", Json),
    Column("metrics", Json, nullable=False),
    Column("evaluator_errors", Json, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("tokens", BigInteger),
    Column("cost", Float),
    Column("error_type", String(256)),
    Column("error_message", Text),
    Column("attempts", Integer, nullable=False),
    Column("finished_at", UtcDateTime, nullable=False),
    # Per node of the last attempt: {node: {ms, calls, tokens}}, at most MAX_NODES nodes.
    Column("nodes", Json),
    # The node the last attempt failed in ("parent/child" in a subgraph).
    Column("error_node", String(512)),
    # Everything that determines the result (code, node settings, case, repeat): equal
    # fingerprints may share a result across runs. NULL: never reused.
    Column("fingerprint", String(64)),
    # The run a reused result was first recorded in; NULL when it ran in this run.
    Column("reused_from", Integer),
    UniqueConstraint("run_id", "cell_key"),
    _one_of("status", CELL_STATUSES, "status"),
    Index("ix_cells_run_id_status", "run_id", "status"),
    Index("ix_cells_run_id_combo_key_case_id", "run_id", "combo_key", "case_id"),
    Index("ix_cells_fingerprint", "fingerprint"),
)
"""One recorded cell; UNIQUE(run_id, cell_key) is what makes recording exactly-once."""

attempts = Table(
    "attempts",
    metadata,
    Column("id", BigId, primary_key=True),
    _run_id(nullable=False),
    Column("cell_key", String(128), nullable=False),
    Column("number", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_type", String(256)),
    Column("error_message", Text),
    Column("started_at", UtcDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    # The LangChain run id of the attempt's graph invocation: its trace's root run.
    Column("root_run_id", String(36)),
    # The node the attempt failed in, and its error's traceback (bounded).
    Column("node", String(512)),
    Column("traceback", Text),
    UniqueConstraint("run_id", "cell_key", "number"),
    _one_of("status", ATTEMPT_STATUSES, "status"),
    Index("ix_attempts_root_run_id", "root_run_id"),
)
"""One attempt at a cell; written with its cell, so a cell's history is complete or absent."""

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    _run_id(nullable=True),
    Column("kind", String(64), nullable=False),
    Column("subject", String(512)),
    Column("data", Json, nullable=False),
    Index("ix_audit_log_run_id_kind", "run_id", "kind"),
)
"""Every event of the bus, append-only."""

_POSTGRESQL_ONLY = {
    # name: (table, column, index method)
    "ix_cells_metrics_gin": (cells, "metrics", "gin"),
    "ix_cells_finished_at_brin": (cells, "finished_at", "brin"),
    "ix_attempts_started_at_brin": (attempts, "started_at", "brin"),
    "ix_audit_log_at_brin": (audit_log, "at", "brin"),
}
POSTGRESQL_ONLY_INDEXES = frozenset(_POSTGRESQL_ONLY)
_DECLARING = threading.Lock()


def with_postgresql_indexes() -> MetaData:
    """The metadata with the PostgreSQL-only indexes (GIN, BRIN) declared too: the whole
    schema the migrations create, for comparing with a migrated database.

    They are declared on the first call, not on import: an index's `postgresql_using`
    option loads SQLAlchemy's PostgreSQL dialect, and statements never need them.
    """
    with _DECLARING:
        for name, (table, column, using) in _POSTGRESQL_ONLY.items():
            if name not in {index.name for index in table.indexes}:
                index = Index(name, table.c[column], postgresql_using=using)
                index.ddl_if(dialect="postgresql")
    return metadata
