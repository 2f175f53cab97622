"""The in-process runner, the default for local work.

Sync-only graphs (every node and router a plain function) run on worker threads, each
running whole cells (`wtb.runners.workers`). Graphs with async parts run on an asyncio loop
in a background thread, where async nodes overlap and sync nodes use a bounded thread
pool. Either way at most `concurrency` cells are in flight, and results reach the caller's
thread in batches through a bounded hand-off (`wtb.runners.handoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from wtb.cells.executor import CellExecutor
from wtb.cells.exits import guard_loop
from wtb.cells.threads import ElasticThreadPool
from wtb.domain import Cell, CellResult
from wtb.events import EventBus
from wtb.runners.handoff import Handoff
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

        executor = CellExecutor(job, emit=bus.publish, backoff_scale=self._backoff_scale)
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
            cancel = _start_loop(executor, cells, concurrency, results, put, stop)
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


def _start_loop(
    executor: CellExecutor,
    cells: Iterable[Cell],
    concurrency: int,
    results: Handoff[CellResult | _End],
    put: Callable[[CellResult | _End], None],
    stop: threading.Event,
) -> Callable[[], None]:
    """Run cells on an asyncio loop in a new thread; returns how to stop it from outside."""
    started = threading.Event()
    handle: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []

    async def pump(pool: ElasticThreadPool) -> None:
        source = iter(cells)
        in_flight: set[asyncio.Task[CellResult]] = set()
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < concurrency:
                    cell = next(source, None)
                    if cell is None:
                        exhausted = True
                    else:
                        in_flight.add(asyncio.create_task(executor.run(cell, pool)))
                if not in_flight:
                    return
                done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    result = task.result()
                    if not results.try_put(result):  # wait without blocking the loop
                        await asyncio.get_running_loop().run_in_executor(None, put, result)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            handle.append((loop, task))
        started.set()
        if stop.is_set():
            return
        pool = ElasticThreadPool(concurrency)
        loop.set_default_executor(pool)
        guard_loop(loop)  # sys.exit() in a node's task fails its cell, not the loop
        await pump(pool)

    def thread_main() -> None:
        failure: BaseException | None = None
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass  # stopped by the consumer
        except BaseException as exc:
            failure = exc
        finally:
            started.set()
            put(_End(failure))

    thread = threading.Thread(target=thread_main, name="wtb-inline-runner", daemon=True)
    thread.start()

    def cancel() -> None:
        started.wait(_STOP_GRACE_S)
        for loop, task in handle:
            with contextlib.suppress(RuntimeError):  # the loop has finished already
                loop.call_soon_threadsafe(task.cancel)
        thread.join(_STOP_GRACE_S)

    return cancel
