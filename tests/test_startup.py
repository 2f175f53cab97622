"""The CLI starts fast: heavy libraries load only in the commands that need them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rag"


def _imported(*args: str) -> set[str]:
    """Top-level packages a `python -m wtb ...` process imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wtb", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


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
