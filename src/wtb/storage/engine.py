"""Engines for the result store: SQLite (embedded default) or PostgreSQL (behind PgBouncer).

Every PostgreSQL connection may be served by PgBouncer in transaction pooling mode, where
consecutive transactions of one client can land on different server connections. So the
engine keeps no session state: no `SET`, no server-side prepared statements
(`prepare_threshold=None`), no session advisory locks.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import ConnectionPoolEntry

from wtb.errors import StorageError

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another writer before failing (several threads write)."""

_POSTGRES_DRIVERS = {"postgresql", "postgresql+psycopg"}


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL for a store URL; plain `postgresql://` means psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(
            f"{url!r} is not a database URL; use sqlite:///path/to/wtb.db or "
            "postgresql://user:password@host:port/database"
        ) from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in _POSTGRES_DRIVERS and parsed.drivername != "sqlite":
        raise StorageError(
            f"unsupported database {redact(parsed)}: use sqlite:///path or postgresql://..."
        )
    if parsed.drivername == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StorageError(
            "an in-memory SQLite store would lose every result; give a file: sqlite:///path/wtb.db"
        )
    return parsed


_SECRET_QUERY_KEYS = frozenset({"password", "sslpassword", "passfile", "sslkey"})


def redact(url: URL | str) -> str:
    """The URL as text with its password hidden, in the user part and in the query
    (`?password=...`): safe for messages and logs."""
    parsed = make_url(url) if isinstance(url, str) else url
    hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_QUERY_KEYS}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine for `url` ("sqlite:///path", "postgresql://..." or "postgresql+psycopg://...")."""
    parsed = parse_url(url)
    if parsed.drivername == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(
        parsed,
        # PgBouncer (transaction pooling) cannot keep server-side prepared statements.
        connect_args={"prepare_threshold": None},
        pool_pre_ping=True,
        hide_parameters=True,  # errors never show the values: they are user data
    )


def _sqlite_engine(url: URL) -> Engine:
    database = Path(str(url.database))
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the directory of {redact(url)}: {exc}; "
            "choose a writable path for the database"
        ) from exc
    # Connections move between the runner's threads; the pool hands each to one at a time.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        hide_parameters=True,  # errors never show the values: they are user data
    )
    event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another connection may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        _journal_in_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _journal_in_wal(cursor: sqlite3.Cursor) -> None:
    """Switch to the WAL journal, waiting as busy_timeout would.

    While another connection writes a new database's first transaction (the schema, see
    wtb.storage.migrate), the database is not in WAL mode yet, and the switch needs a lock
    SQLite does not wait for (waiting could deadlock): it fails at once with SQLITE_BUSY.
    Once that transaction is committed the database is in WAL mode and the switch is a
    no-op, so try again until then.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
