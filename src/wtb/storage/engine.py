"""Engines for the result store: SQLite (embedded default) or PostgreSQL (behind PgBouncer).

Every PostgreSQL connection may be served by PgBouncer in transaction pooling mode, where
consecutive transactions of one client can land on different server connections. So the
engine keeps no session state: no `SET`, no server-side prepared statements
(`prepare_threshold=None`), no session advisory locks. Nothing waits without a deadline:
connecting has `connect_timeout`, and every transaction starts with `SET LOCAL
statement_timeout` and `SET LOCAL lock_timeout` (a `SET LOCAL` lasts exactly one
transaction, which PgBouncer keeps on one server connection; PgBouncer refuses startup
`options` or, told to ignore them, drops them silently, and a session-level `SET` would
leak to other clients).
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
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
    except (ArgumentError, ValueError):
        # ValueError: a port that is not a number. The message names the URL redacted only.
        raise StorageError(
            f"{redact(url)!r} is not a database URL (--database or WTB_DATABASE_URL)",
            fix="use sqlite:///path/to/wtb.db or postgresql://user:password@host:port/database",
        ) from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise StorageError(
            f"{redact(parsed)}: port {parsed.port} is out of range (--database or "
            "WTB_DATABASE_URL)",
            fix="give a port from 1 to 65535, e.g. 5432 (PostgreSQL) or 6432 (PgBouncer)",
        )
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
    (`?password=...`): safe for messages and logs. Text that does not parse as a URL
    (`user:secret@host/db`, a port that is not a number) keeps only what follows its last
    `@`, without a query: whatever came before may be a password."""
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return _redact_unparsed(url)
    else:
        parsed = url
    hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_QUERY_KEYS}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


def _redact_unparsed(text: str) -> str:
    """`redact` for text that is no URL: the part before the last `@` (user, password) and
    any query are hidden."""
    scheme, sep, rest = text.partition("://")
    if not sep or "@" in scheme:
        scheme, rest = "", text
    _, at, host = rest.rpartition("@")
    host = host.split("?", 1)[0]
    shown = f"***@{host}" if at else host
    if not at and ":" in host.split("/", 1)[0] and not scheme:
        shown = "***"  # `user:secret` with no host: all of it may be secret
    hidden_query = "?***" if "?" in rest else ""
    return (f"{scheme}://" if scheme else "") + shown + hidden_query


@dataclass(frozen=True)
class Deadlines:
    """How long a PostgreSQL store waits, in seconds (WTB_DB_*_TIMEOUT_SECONDS)."""

    connect: float = 10.0
    statement: float = 300.0
    lock: float = 10.0

    @classmethod
    def from_settings(cls) -> Deadlines:
        from wtb.settings import get_settings

        settings = get_settings()
        return cls(
            connect=settings.db_connect_timeout_seconds,
            statement=settings.db_statement_timeout_seconds,
            lock=settings.db_lock_timeout_seconds,
        )


def make_engine(url: str, *, read_only: bool = False, deadlines: Deadlines | None = None) -> Engine:
    """An engine for `url` ("sqlite:///path", "postgresql://..." or "postgresql+psycopg://...").

    `read_only` (SQLite): the file must exist and is never created, its directory neither;
    a file or directory this process cannot write (a read-only disk) is opened read-only
    (`mode=ro`, or `immutable=1` when even that needs a write).
    `deadlines` (PostgreSQL only) default to the WTB_DB_*_TIMEOUT_SECONDS settings.
    """
    parsed = parse_url(url)
    if parsed.drivername == "sqlite":
        return _sqlite_read_engine(parsed) if read_only else _sqlite_engine(parsed)
    deadlines = deadlines or Deadlines.from_settings()
    engine = create_engine(
        parsed,
        connect_args={
            # PgBouncer (transaction pooling) cannot keep server-side prepared statements.
            "prepare_threshold": None,
            # Whole seconds, at least 2 (libpq's rule); covers the startup handshake too.
            "connect_timeout": max(2, math.ceil(deadlines.connect)),
        },
        pool_pre_ping=True,
        hide_parameters=True,  # errors never show the values: they are user data
    )
    event.listen(engine, "begin", _transaction_deadlines(deadlines))
    return engine


def _transaction_deadlines(deadlines: Deadlines) -> Any:
    statement_ms = max(1, round(deadlines.statement * 1000))
    lock_ms = max(1, round(deadlines.lock * 1000))
    sql = f"SET LOCAL statement_timeout = {statement_ms}; SET LOCAL lock_timeout = {lock_ms}"

    def begin(conn: Connection) -> None:
        # On the driver's connection: psycopg opens the transaction with this statement,
        # and the settings end with it, on whichever server connection PgBouncer gave.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    return begin


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


def _sqlite_read_engine(url: URL) -> Engine:
    database = Path(str(url.database))
    if not database.is_file():
        raise StorageError(
            f"no result store at {redact(url)}: no file {str(database)!r}",
            fix="run `wtb run` first, or name the store with --database (or WTB_DATABASE_URL)",
        )
    if sqlite_writable(database):
        # Readers and writers share the file as usual (the WAL); nothing is migrated.
        return _sqlite_engine(url)
    target = database.resolve().as_uri()

    def connect() -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(f"{target}?mode=ro", uri=True, check_same_thread=False)
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # A WAL database on a read-only disk without its -shm file: nobody can write
            # there, so reading it as immutable is safe.
            connection = sqlite3.connect(
                f"{target}?mode=ro&immutable=1", uri=True, check_same_thread=False
            )
        connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        return connection

    return create_engine("sqlite://", creator=connect)


def sqlite_writable(database: Path) -> bool:
    """Whether this process may write a SQLite file and create its journal beside it."""
    return os.access(database, os.W_OK) and os.access(database.parent, os.W_OK)


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
