"""The in-process runner, the default for local work.

Sync-only graphs (every node and router a plain function) run on worker threads, each
running whole cells (`wtb.runners.workers`). Graphs with async parts run on an asyncio loop
in a background thread, where async nodes overlap and sync nodes use a bounded thread
pool. Either way at most `concurrency` cells are in flight, and results reach the caller's
thread in batches through a bounded hand-off (`wtb.runners.handoff`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from wtb.cells.attempts import Retry
from wtb.cells.executor import CellExecutor
from wtb.cells.exits import guard_loop
from wtb.cells.nodes import NodeTimer
from wtb.cells.threads import ElasticThreadPool
from wtb.domain import WORKER_STOPPED, Attempt, Cell, CellResult
from wtb.events import Event, EventBus
from wtb.runners.handoff import Handoff
from wtb.runners.loop_watch import LoopWatch
from wtb.runners.workers import CellWorkers
from wtb.runs.spec import RunSpec
from wtb.variant_matrix import expand_combinations

_STOP_GRACE_S: Final = 10.0


class _End:
    """Put on the queue when producing is over (with the exception that ended it, if any)."""

    def __init__(self, exc: BaseException | None = None) -> None:
        self.exc = exc


class InlineRunner:
    name = "inline"

    def __init__(self, concurrency: int | None = None, *, backoff_scale: float = 1.0) -> None:
        self._concurrency = concurrency
        self._backoff_scale = backoff_scale

    def run(self, job: RunSpec, cells: Iterable[Cell], bus: EventBus) -> Iterator[CellResult]:
        concurrency = self._concurrency or job.batch.concurrency
        results: Handoff[CellResult | _End] = Handoff(4 * concurrency)
        stop = threading.Event()

        def put(item: CellResult | _End) -> None:
            # Blocking, but never forever: a closed consumer sets `stop`.
            results.put(item, stop, urgent=isinstance(item, _End))

        gate = _EmitGate(bus.publish)
        executor = CellExecutor(job, emit=gate, backoff_scale=self._backoff_scale)
        if all(executor.is_sync(c) for c in expand_combinations(job.batch)):
            workers = CellWorkers(
                executor,
                iter(cells),
                concurrency,
                job.batch.timeout_seconds,
                lambda r: put(_End(workers.failure) if r is None else r),
                stop,
            )
            workers.start()
            cancel = stop.set
        else:
            cancel = _LoopCells(
                executor,
                gate,
                cells,
                concurrency,
                results,
                put,
                stop,
                job.batch.timeout_seconds,
            ).start()
        try:
            while True:
                for item in results.take():
                    if isinstance(item, _End):
                        if item.exc is not None:
                            raise item.exc
                        return
                    yield item
        finally:
            stop.set()
            cancel()


_WATCH_S: Final = 0.25
"""How often the watchdog looks at the loop's heartbeat."""
_BLOCK_GRACE_S: Final = 1.0
"""How long past an attempt's timeout a blocked loop is given before it is replaced."""

_Item = tuple[Cell, tuple[Attempt, ...], float]
"""A cell to run, the attempts it has made, and the delay before its next one."""


class _EmitGate:
    """The executor's events, except those of loops given up on (their late events)."""

    def __init__(self, publish: Callable[[Event], None]) -> None:
        self._publish = publish
        self.muted: set[threading.Thread] = set()

    def __call__(self, event: Event) -> None:
        if self.muted and threading.current_thread() in self.muted:
            return
        self._publish(event)


class _Generation:
    """One event loop (in a thread of its own) and the cells in flight on it."""

    def __init__(self) -> None:
        self.watch = LoopWatch()
        self.lock = threading.Lock()
        self.abandoned = False
        self.in_flight: dict[asyncio.Task[CellResult], _Item] = {}
        self.thread: threading.Thread | None = None
        self.handle: tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None = None
        self.started = threading.Event()


class _LoopCells:
    """Cells on an asyncio loop in a thread of its own, at most `concurrency` at once.

    A cell that blocks the loop (a blocking call inside an `async def` node) stops every
    timeout on it, its own included. A watchdog thread reads the loop's heartbeat
    (`wtb.runners.loop_watch`, as the Ray actor does): a loop blocked for longer than an
    attempt's timeout is given up on, as the Ray driver gives up on a blocked actor. The
    cell that blocked it is recorded as timed out, naming the node; the other cells in
    flight run again on a new loop (an attempt `WorkerStopped`, at no cost to their
    budgets); the old loop's thread, a daemon, is abandoned with whatever it does later.
    """

    def __init__(
        self,
        executor: CellExecutor,
        gate: _EmitGate,
        cells: Iterable[Cell],
        concurrency: int,
        results: Handoff[CellResult | _End],
        put: Callable[[CellResult | _End], None],
        stop: threading.Event,
        timeout: float,
    ) -> None:
        self._executor = executor
        self._gate = gate
        self._source = iter(cells)
        self._again: collections.deque[_Item] = collections.deque()
        self._source_lock = threading.Lock()
        self._concurrency = concurrency
        self._results = results
        self._put = put
        self._stop = stop
        self._timeout = timeout
        self._current = _Generation()
        self._done = threading.Event()

    def start(self) -> Callable[[], None]:
        """Start; returns how to stop it from outside."""
        self._start(self._current)
        threading.Thread(target=self._watchdog, name="wtb-loop-watchdog", daemon=True).start()
        return self._cancel

    def _next(self) -> _Item | None:
        with self._source_lock:
            if self._again:
                return self._again.popleft()
            cell = next(self._source, None)
        return None if cell is None else (cell, (), 0.0)

    def _start(self, gen: _Generation) -> None:
        gen.thread = threading.Thread(
            target=self._thread_main, args=(gen,), name="wtb-inline-runner", daemon=True
        )
        gen.thread.start()

    def _thread_main(self, gen: _Generation) -> None:
        failure: BaseException | None = None
        try:
            asyncio.run(self._main(gen))
        except asyncio.CancelledError:
            pass  # stopped by the consumer
        except BaseException as exc:
            failure = exc
        finally:
            gen.started.set()
            if not gen.abandoned:
                self._done.set()
                self._put(_End(failure))

    async def _main(self, gen: _Generation) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            gen.handle = (loop, task)
        gen.started.set()
        if self._stop.is_set():
            return
        pool = ElasticThreadPool(self._concurrency)
        loop.set_default_executor(pool)
        guard_loop(loop)  # sys.exit() in a node's task fails its cell, not the loop
        gen.watch.install(loop)
        await self._pump(gen, pool)

    async def _pump(self, gen: _Generation, pool: ElasticThreadPool) -> None:
        in_flight = gen.in_flight
        exhausted = False
        try:
            while not gen.abandoned:
                while not exhausted and len(in_flight) < self._concurrency:
                    item = self._next()
                    if item is None:
                        exhausted = True
                    else:
                        in_flight[asyncio.create_task(self._cell(gen, item, pool))] = item
                if not in_flight:
                    return
                done, _ = await asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    in_flight.pop(task, None)
                    result = task.result()
                    with gen.lock:
                        if gen.abandoned:  # the watchdog settled this loop's cells
                            return
                        if self._results.try_put(result):
                            continue
                    # Wait for room without blocking the loop.
                    await asyncio.get_running_loop().run_in_executor(None, self._put, result)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _cell(self, gen: _Generation, item: _Item, pool: ElasticThreadPool) -> CellResult:
        """A cell's attempts, each through the executor, its backoff waited out here."""
        cell, history, delay = item
        gen.watch.enter(cell.key)
        task = asyncio.current_task()
        while True:
            if delay:
                await asyncio.sleep(delay)
            step = await self._executor.attempt(cell, pool, history)
            if isinstance(step, CellResult):
                return step
            history, delay = step.attempts, step.delay
            if task is not None:
                gen.in_flight[task] = (cell, history, delay)  # known if the loop is given up

    def _watchdog(self) -> None:
        while not self._done.wait(_WATCH_S):
            gen = self._current
            stalled = gen.watch.stalled_for()
            if gen.abandoned or stalled < self._timeout + _BLOCK_GRACE_S:
                continue
            self._replace(gen, gen.watch.blocking_cell(stalled_s=0.0), stalled)

    def _replace(self, gen: _Generation, culprit: str | None, stalled: float) -> None:
        """Give up on a blocked loop: settle its cells and go on with a new loop."""
        with gen.lock:
            gen.abandoned = True
        if gen.thread is not None:
            self._gate.muted.add(gen.thread)
        finished: list[CellResult] = []
        again: list[_Item] = []
        for cell, history, delay in list(gen.in_flight.values()):
            attempt = self._executor.live.pop(cell.key, None)
            if attempt is None:  # between attempts: its next one runs on the new loop
                again.append((cell, history, delay))
                continue
            if cell.key == culprit:
                node = attempt.nodes.hung_node() if attempt.nodes is not None else None
                decision = attempt.timed_out(
                    f"the cell blocked the event loop for over {stalled:.0f} s"
                    + (f" in node {node!r}" if node else "")
                    + f" (timeout {self._timeout:g} s per attempt): a blocking call inside an "
                    "async node stops every timeout on the loop; await an async API instead, "
                    "or make the node a plain function. The loop was given up on and the "
                    "other cells run on a new one"
                )
            else:
                decision = attempt.lost(
                    WORKER_STOPPED,
                    "the event loop was given up on because another cell blocked it",
                )
            if isinstance(decision, Retry):
                again.append((cell, decision.attempts, decision.delay))
            else:
                timer = attempt.nodes
                figures = timer.figures() if isinstance(timer, NodeTimer) else None
                finished.append(self._executor.scorer.failure(cell, decision.attempts, figures))
        for result in finished:  # before the new loop can end the run
            self._put(result)
        with self._source_lock:
            self._again.extend(again)
        if self._stop.is_set():
            self._done.set()
            self._put(_End())
            return
        self._current = _Generation()
        self._start(self._current)

    def _cancel(self) -> None:
        gen = self._current
        gen.started.wait(_STOP_GRACE_S)
        self._done.set()
        if gen.handle is not None:
            loop, task = gen.handle
            with contextlib.suppress(RuntimeError):  # the loop has finished already
                loop.call_soon_threadsafe(task.cancel)
        if gen.thread is not None:
            gen.thread.join(_STOP_GRACE_S)
