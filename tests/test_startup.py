"""The CLI starts fast: heavy libraries load only in the commands that need them.

Import assertions only: nothing here times anything (bench/ measures).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from toybatch import TOY, toy_batchtest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rag"


def _modules(*args: str) -> set[str]:
    """Every module a `python -m wtb ...` process imports (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wtb", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _imported(*args: str) -> set[str]:
    """Top-level packages a `python -m wtb ...` process imports."""
    return {name.split(".")[0] for name in _modules(*args)}


def test_help_imports_no_heavy_library() -> None:
    imported = _imported("--help")
    assert "click" in imported  # the measurement works
    assert not imported & {
        "langgraph",
        "langchain_core",
        "sqlalchemy",
        "alembic",
        "rich",
        "pydantic",
    }


def test_validate_does_not_load_the_database_layer() -> None:
    imported = _imported("validate", "-f", str(EXAMPLE))
    assert "langgraph" in imported  # validating imports the user's graph
    assert not imported & {"sqlalchemy", "alembic", "psycopg"}


def _one_case_batch(directory: Path, name: str) -> Path:
    """A one-case BatchTest of the toy workflow; each name is a new run."""
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(toy_batchtest(name, 1, matrix={"answer": ["original"]})))
    return path


def _run(batch: Path, database: Path) -> set[str]:
    workflow = str(TOY / "workflow.yaml")
    return _modules(
        "run", "-f", workflow, "-f", str(batch), "-q", "--database", f"sqlite:///{database}"
    )


def test_run_loads_no_migration_tool_nor_orm(tmp_path: Path) -> None:
    """A new SQLite store is created, and a store at the head revision opened, without
    Alembic; the store uses SQLAlchemy Core, never the ORM or another database's dialect."""
    database = tmp_path / "wtb.db"
    for name in ("first", "second"):  # a new database, then the existing one, new run
        modules = _run(_one_case_batch(tmp_path, name), database)
        assert "sqlalchemy" in modules  # the measurement works
        assert not {m for m in modules if m.split(".")[0] in {"alembic", "mako"}}
        assert not {m for m in modules if m.startswith(("sqlalchemy.orm", "sqlalchemy.ext"))}
        assert "sqlalchemy.dialects.postgresql" not in modules
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM cells").fetchone() == (2,)
