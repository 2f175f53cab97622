"""The Ray actor that runs cells: a long-lived worker per actor, graphs built once.

An actor is async: Ray runs its `run` calls on one event loop, so up to its
`max_concurrency` cells overlap (async nodes await side by side; sync graphs run in the
actor's thread pool). Every cell goes through the engine's CellExecutor, exactly as in the
inline runner. The actor never touches the database: results, with the audit events of
their attempts, go back to the driver, which writes them in batches.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections import defaultdict
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from wtb import events
from wtb.cells.attempts import Retry
from wtb.cells.executor import CellExecutor
from wtb.cells.exits import guarded_task_factory
from wtb.cells.threads import ElasticThreadPool
from wtb.domain import Attempt, Cell, CellResult
from wtb.errors import WtbError
from wtb.runs.spec import RunSpec
from wtb.variant_matrix import expand_combinations

CellAttempt = tuple[Cell, tuple[Attempt, ...]]
"""A cell to attempt, with the attempts already made."""
AttemptOutcome = tuple[CellResult | Retry, list[events.Event]]
"""What a call returns: the cell's result (or when to try again), and the audit events."""


_CELL: ContextVar[str | None] = ContextVar("wtb_actor_cell", default=None)

_HEARTBEAT_S = 0.25
_STALLED_S = 2.0
"""A loop that has not ticked for this long is blocked (not merely busy)."""

CONTROL_GROUP = "control"
"""Ray concurrency group (its own thread and event loop) for calls that must be answered
even while a cell blocks the cells' event loop."""


class CellActor:
    def __init__(self, job: RunSpec, concurrency: int, backoff_scale: float) -> None:
        self._events: defaultdict[str, list[events.Event]] = defaultdict(list)
        self._cell_loop: asyncio.AbstractEventLoop | None = None
        self._task_cells: weakref.WeakKeyDictionary[asyncio.Future[Any], str] = (
            weakref.WeakKeyDictionary()
        )
        self._executor = CellExecutor(job, emit=self._collect, backoff_scale=backoff_scale)
        self._concurrency = concurrency
        self._pool: ElasticThreadPool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._heartbeat = time.monotonic()
        self._finished = 0
        """Attempts finished so far: tells a busy actor from a stuck one."""
        # Build (and so import) every combination's graph now: a mistake surfaces when the
        # actor starts, not halfway through the batch.
        self._problem: str | None = None
        try:
            for combination in expand_combinations(job.batch):
                self._executor.is_sync(combination)
        except WtbError as exc:
            self._problem = str(exc)

    def _collect(self, event: events.Event) -> None:
        if event.subject is not None:
            self._events[event.subject].append(event)

    def _loop_pool(self) -> ElasticThreadPool:
        if self._pool is None:
            self._pool = ElasticThreadPool(self._concurrency)
            loop = self._cell_loop = asyncio.get_running_loop()
            loop.set_default_executor(self._pool)
            # sys.exit() in a node's task fails its cell, not the actor's loop.
            inner = guarded_task_factory(loop.get_task_factory())
            loop.set_task_factory(self._cell_task_factory(inner))
            self._beat()
        return self._pool

    def _beat(self) -> None:
        """Runs on the cells' loop every _HEARTBEAT_S while the loop is free to run it."""
        self._heartbeat = time.monotonic()
        if self._cell_loop is not None:
            self._cell_loop.call_later(_HEARTBEAT_S, self._beat)

    def _cell_task_factory(self, inner: Any) -> Any:
        """Tasks created for a cell (LangGraph runs nodes in tasks of their own) are noted
        with the cell's key, so that `blocking_cell` can name the cell a task belongs to."""
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

    async def ready(self) -> tuple[int, str | None]:
        """Answers once the actor is constructed: its worker's process id, and what keeps
        it from running cells (the workflow's code cannot be imported here), if anything."""
        return os.getpid(), self._problem

    async def run(self, chunk: Sequence[CellAttempt]) -> list[AttemptOutcome]:
        """Make the next attempt of each cell in `chunk`, after the attempts it lists
        (made here or on lost workers), at most `concurrency` at once on this actor.

        One attempt per cell per call: the driver holds every attempt's record and waits
        out backoff itself, so a worker lost mid-cell loses only the attempt in progress.
        Cells come in chunks so that Ray's cost per call is shared when cells are quick.
        """
        pool = self._loop_pool()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        slots = self._slots
        return await asyncio.gather(
            *(self._attempt(cell, attempts, pool, slots) for cell, attempts in chunk)
        )

    async def _attempt(
        self,
        cell: Cell,
        attempts: Sequence[Attempt],
        pool: ElasticThreadPool,
        slots: asyncio.Semaphore,
    ) -> AttemptOutcome:
        async with slots:
            task = asyncio.current_task()
            if task is not None:
                self._task_cells[task] = cell.key
            _CELL.set(cell.key)  # this task's context: inherited by the tasks it creates
            step = await self._executor.attempt(cell, pool, attempts)
            self._finished += 1
        return step, self._events.pop(cell.key, [])

    async def blocking_cell(self) -> tuple[str | None, int]:
        """The key of the cell whose code has held the cells' event loop for over
        _STALLED_S (None when the loop is free), and how many attempts have finished.

        Called in the control group, from another thread: a cell that blocks the loop
        (a blocking call inside an async node) defeats its own timeout, and this names it.
        """
        loop = self._cell_loop
        if loop is None or time.monotonic() - self._heartbeat < _STALLED_S:
            return None, self._finished
        task = asyncio.current_task(loop)
        return (None if task is None else self._task_cells.get(task)), self._finished
