"""Schema migrations of the result store, run from code: no alembic.ini is needed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine

from wtb.storage.schema import POSTGRESQL_ONLY_INDEXES

SCRIPT_LOCATION = Path(__file__).parent / "migrations"

MIGRATION_LOCK_ID = 0x5754_4200_0001
"""pg_advisory_xact_lock key of WTB's schema migrations ("WTB" + 1); see migrations/env.py."""

_ALEMBIC = threading.Lock()
"""Alembic keeps the running migration in module globals (`context`, `op`): one at a time
per process. Between processes the migration's own database lock serializes them."""

IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def include_object_for(dialect_name: str) -> IncludeObject:
    """Alembic's autogenerate filter: PostgreSQL-only indexes exist only on PostgreSQL."""

    def include_object(
        _obj: Any, name: str | None, type_: str, _reflected: bool, _compare_to: Any
    ) -> bool:
        return not (
            type_ == "index" and name in POSTGRESQL_ONLY_INDEXES and dialect_name != "postgresql"
        )

    return include_object


def alembic_config(connection: Connection) -> Config:
    """An Alembic configuration whose environment runs on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; a no-op when it is there, safe to run concurrently."""
    with _ALEMBIC, engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` ("base" removes every table)."""
    with _ALEMBIC, engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)
