"""The result store: SQLAlchemy Core tables, Alembic migrations, and the ResultStore interface.

SQLite is the embedded default (one file per project); PostgreSQL, reached through
PgBouncer in transaction pooling mode, is the shared store of the operator and Ray jobs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wtb.storage.records import RunInfo, RunProgress, RunRecord, RunStatus, StoredCell

if TYPE_CHECKING:
    from wtb.storage.engine import make_engine, redact
    from wtb.storage.migrate import downgrade, upgrade
    from wtb.storage.store import ResultStore

# SQLAlchemy loads on first use, not with `wtb.storage.records`: validating manifests needs
# the records but never a database. Alembic loads only to migrate (wtb.storage.migrate).
_LAZY = {
    "ResultStore": "wtb.storage.store",
    "make_engine": "wtb.storage.engine",
    "redact": "wtb.storage.engine",
    "downgrade": "wtb.storage.migrate",
    "upgrade": "wtb.storage.migrate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ResultStore",
    "RunInfo",
    "RunProgress",
    "RunRecord",
    "RunStatus",
    "StoredCell",
    "default_sqlite_url",
    "downgrade",
    "make_engine",
    "redact",
    "upgrade",
]

DEFAULT_DIRECTORY = ".wtb"
"""Per project, beside the manifests (like .pytest_cache); add it to .gitignore."""


def default_sqlite_url() -> str:
    """sqlite:///<current directory>/.wtb/wtb.db: the store when no URL is given."""
    return f"sqlite:///{Path.cwd() / DEFAULT_DIRECTORY / 'wtb.db'}"
