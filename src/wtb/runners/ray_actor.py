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
from collections import defaultdict
from collections.abc import Sequence

from wtb import events
from wtb.cells.attempts import Retry
from wtb.cells.executor import CellExecutor
from wtb.cells.exits import guard_loop
from wtb.cells.threads import ElasticThreadPool
from wtb.domain import Attempt, Cell, CellResult
from wtb.errors import WtbError
from wtb.runners.loop_watch import LoopWatch
from wtb.runs.spec import RunSpec
from wtb.variant_matrix import expand_combinations

CellAttempt = tuple[Cell, tuple[Attempt, ...]]
"""A cell to attempt, with the attempts already made."""
AttemptOutcome = tuple[CellResult | Retry, list[events.Event]]
"""What a call returns: the cell's result (or when to try again), and the audit events."""


CONTROL_GROUP = "control"
"""Ray concurrency group (its own thread and event loop) for calls that must be answered
even while a cell blocks the cells' event loop."""


class CellActor:
    def __init__(self, job: RunSpec, concurrency: int, backoff_scale: float) -> None:
        self._events: defaultdict[str, list[events.Event]] = defaultdict(list)
        self._watch = LoopWatch()
        self._executor = CellExecutor(job, emit=self._collect, backoff_scale=backoff_scale)
        self._concurrency = concurrency
        self._pool: ElasticThreadPool | None = None
        self._slots: asyncio.Semaphore | None = None
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
            loop = asyncio.get_running_loop()
            loop.set_default_executor(self._pool)
            # sys.exit() in a node's task fails its cell, not the actor's loop; tasks
            # created for a cell are noted with its key: `blocking_cell` names it.
            guard_loop(loop)
            self._watch.install(loop)
        return self._pool

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
            self._watch.enter(cell.key)  # inherited by the tasks this one creates
            step = await self._executor.attempt(cell, pool, attempts)
            self._finished += 1
        return step, self._events.pop(cell.key, [])

    async def blocking_cell(self) -> tuple[str | None, int]:
        """The key of the cell whose code has held the cells' event loop for over
        STALLED_S (None when the loop is free), and how many attempts have finished.

        Called in the control group, from another thread: a cell that blocks the loop
        (a blocking call inside an async node) defeats its own timeout, and this names it.
        """
        return self._watch.blocking_cell(), self._finished
