"""The config a cell attempt invokes its graph with.

Kept in one function so that everything an invocation is given is decided in one place.
"""

from __future__ import annotations

from typing import Any

from wtb.domain import Cell


def thread_id(cell: Cell, attempt_number: int) -> str:
    """The checkpointer thread of one attempt of a cell: no two attempts share one."""
    return f"{cell.key}#{attempt_number}"


def invocation_config(cell: Cell, attempt_number: int, *, needs_thread: bool) -> dict[str, Any]:
    """The config of `graph.invoke` / `ainvoke` for this attempt of `cell`.

    `needs_thread`: the graph has a checkpointer (WTB's own in-memory saver, see
    `wtb.runtime.attempt`), so the invocation runs on a thread of its own.
    """
    if not needs_thread:
        return {}
    return {"configurable": {"thread_id": thread_id(cell, attempt_number)}}
