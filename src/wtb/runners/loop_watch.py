"""Whether a cell blocks its event loop, and which: a heartbeat on the loop and the cell of
every task. Used by the Ray actor (asked from its control thread) and the inline runner's
loop (asked by its watchdog thread).

A blocking call inside an `async def` node (or anything else on the loop) holds the whole
loop: no timeout of that cell or any other can fire. The heartbeat, a callback the loop
runs every HEARTBEAT_S while it is free to, tells a blocked loop from a busy one; the task
the loop is running then is the culprit, and the task factory noted whose cell it is
(LangGraph runs nodes in tasks of their own, created in the cell's context).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from contextvars import ContextVar
from typing import Any, Final

HEARTBEAT_S: Final = 0.25
STALLED_S: Final = 2.0
"""A loop that has not ticked for this long is blocked (not merely busy)."""

_CELL: ContextVar[str | None] = ContextVar("wtb_loop_cell", default=None)


class LoopWatch:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeat = time.monotonic()
        self._task_cells: weakref.WeakKeyDictionary[asyncio.Future[Any], str] = (
            weakref.WeakKeyDictionary()
        )

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch `loop` (call on it): its heartbeat starts, and its tasks are noted."""
        self._loop = loop
        loop.set_task_factory(self._cell_task_factory(loop.get_task_factory()))
        self._beat()

    def _beat(self) -> None:
        """Runs on the loop every HEARTBEAT_S while the loop is free to run it."""
        self._heartbeat = time.monotonic()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_later(HEARTBEAT_S, self._beat)

    def _cell_task_factory(self, inner: Any) -> Any:
        task_cells = self._task_cells

        def factory(
            loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
        ) -> asyncio.Future[Any]:
            task: asyncio.Future[Any] = (
                inner(loop, coro, **kwargs) if inner else asyncio.Task(coro, loop=loop, **kwargs)
            )
            context = kwargs.get("context")
            key = context.get(_CELL) if context is not None else _CELL.get()
            if key is not None:
                task_cells[task] = key
            return task

        return factory

    def enter(self, cell_key: str) -> None:
        """The current task works for `cell_key`, and so do the tasks it creates (call in
        the cell's own task)."""
        task = asyncio.current_task()
        if task is not None:
            self._task_cells[task] = cell_key
        _CELL.set(cell_key)

    def stalled_for(self) -> float:
        """Seconds since the loop last ticked (0 for a loop not yet watched)."""
        return 0.0 if self._loop is None else time.monotonic() - self._heartbeat

    def blocking_cell(self, stalled_s: float = STALLED_S) -> str | None:
        """The key of the cell whose code has held the loop for over `stalled_s` (None when
        the loop is free, or the task holding it is no cell's). Safe from another thread."""
        loop = self._loop
        if loop is None or self.stalled_for() < stalled_s:
            return None
        task = asyncio.current_task(loop)
        return None if task is None else self._task_cells.get(task)
