"""Schema migrations of the result store, run from code: no alembic.ini is needed.

Alembic is the source of truth for the schema, but it is imported only when a database
needs migrating: `is_current` tells a database already at `HEAD_REVISION` by a plain query
of Alembic's version table, which is what almost every `wtb run` finds, and a new SQLite
database gets the statements Alembic's migrations ran, recorded in `sqlite_schema`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine

from wtb.storage.schema import POSTGRESQL_ONLY_INDEXES

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = Path(__file__).parent / "migrations"

HEAD_REVISION = "0004"
"""The newest revision under migrations/versions; a test checks that Alembic agrees."""

VERSION_TABLE = "alembic_version"
"""Alembic's table of the revision a database is at (Alembic's default name)."""

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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: not migrated), read without Alembic.

    Plain statements in one short transaction, so this works through PgBouncer in
    transaction pooling mode.
    """
    with engine.connect() as connection:
        return _revision(connection)


def _revision(connection: Connection) -> str | None:
    if not connection.dialect.has_table(connection, VERSION_TABLE):
        return None
    versions = list(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    # Alembic keeps one row per head; WTB's migrations have one head.
    return versions[0] if len(versions) == 1 else None


def is_current(engine: Engine) -> bool:
    """Whether the schema is at HEAD_REVISION. A database that is not (a new one, an older
    or a newer schema) is for `create_sqlite_schema` or `upgrade` to migrate or refuse."""
    return current_revision(engine) == HEAD_REVISION


def create_sqlite_schema(engine: Engine) -> bool:
    """Create the schema of a new, empty SQLite database from the statements Alembic's
    migrations ran (`wtb.storage.sqlite_schema`), without loading Alembic.

    Returns whether the database is at HEAD_REVISION afterwards; False for any other
    database (not SQLite, not empty): `upgrade` then migrates it. Safe to run
    concurrently: the write lock is taken first, as migrations/env.py does, so a second
    creator waits and finds the tables made.
    """
    if engine.dialect.name != "sqlite":
        return False
    from wtb.storage.sqlite_schema import REVISION, STATEMENTS

    with engine.begin() as connection:
        # pysqlite has not begun a transaction yet; make it an immediate (write) one.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        if connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar_one():
            return _revision(connection) == HEAD_REVISION
        for statement in STATEMENTS:
            connection.exec_driver_sql(statement)
        connection.exec_driver_sql(
            "INSERT INTO alembic_version (version_num) VALUES (?)", (REVISION,)
        )
    return REVISION == HEAD_REVISION


def sqlite_statements(engine: Engine) -> list[str]:
    """The statements that made a SQLite database's tables and indexes, in their order."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
        )
        return list(rows.scalars())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; a no-op when it is there, safe to run concurrently."""
    from alembic import command

    with _ALEMBIC, engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` ("base" removes every table)."""
    from alembic import command

    with _ALEMBIC, engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)
