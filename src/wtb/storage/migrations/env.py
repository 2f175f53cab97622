"""Alembic environment: runs on the connection wtb.storage.migrate hands over.

Two processes may migrate one database at once (two CLI runs, a driver and the operator).
The migration serializes them inside its own transaction, which PgBouncer's transaction
pooling allows: PostgreSQL takes a transaction-scoped advisory lock (a session lock would
stay held on a pooled server connection); SQLite takes its write lock up front. The second
migrator then reads the version the first one committed and has nothing left to do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from wtb.storage.migrate import MIGRATION_LOCK_ID, include_object_for
from wtb.storage.schema import with_postgresql_indexes


def _serialize(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    elif connection.dialect.name == "sqlite":
        # pysqlite has not begun a transaction yet; make it an immediate (write) one.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through wtb.storage.migrate.upgrade(engine)")
    context.configure(
        connection=connection,
        target_metadata=with_postgresql_indexes(),
        include_object=include_object_for(connection.dialect.name),
    )
    with context.begin_transaction():
        _serialize(connection)
        context.run_migrations()


run_migrations_online()
