"""The in-process runner: an asyncio loop in a background thread, bounded concurrency.

Async graphs overlap on the loop; sync graphs run whole in a bounded pool of worker
threads. Results reach the caller's thread through a bounded queue, so a slow consumer
(the store) slows the producer instead of piling results up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Final, cast

from wtb.events import EventBus
from wtb.executor import CellExecutor
from wtb.job import BatchJob
from wtb.results import Cell, CellResult
from wtb.runners.threads import ElasticThreadPool

_DONE: Final = object()
_STOP_GRACE_S = 10.0


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class InlineRunner:
    name = "inline"

    def __init__(self, concurrency: int | None = None, *, backoff_scale: float = 1.0) -> None:
        self._concurrency = concurrency
        self._backoff_scale = backoff_scale

    def run(self, job: BatchJob, cells: Iterable[Cell], bus: EventBus) -> Iterator[CellResult]:
        concurrency = self._concurrency or job.batch.concurrency
        results: queue.Queue[object] = queue.Queue(maxsize=4 * concurrency)
        stop = threading.Event()
        started = threading.Event()
        handle: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]] = []

        def put(item: object) -> None:
            # Blocking put, but never forever: a closed consumer sets `stop`.
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        async def pump(executor: CellExecutor) -> None:
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
                            in_flight.add(asyncio.create_task(executor.run(cell)))
                    if not in_flight:
                        return
                    done, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        item = task.result()
                        while True:
                            try:
                                results.put_nowait(item)
                                break
                            except queue.Full:
                                await asyncio.sleep(0.002)
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
            executor = CellExecutor(
                job, emit=bus.publish, thread_pool=pool, backoff_scale=self._backoff_scale
            )
            await pump(executor)

        def thread_main() -> None:
            try:
                asyncio.run(main())
            except asyncio.CancelledError:
                pass  # closed by the consumer
            except BaseException as exc:
                put(_Failure(exc))
            finally:
                started.set()
                put(_DONE)

        thread = threading.Thread(target=thread_main, name="wtb-inline-runner", daemon=True)
        thread.start()
        try:
            while True:
                item = results.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                yield cast(CellResult, item)
        finally:
            stop.set()
            started.wait(_STOP_GRACE_S)
            for loop, task in handle:
                with contextlib.suppress(RuntimeError):  # the loop has finished already
                    loop.call_soon_threadsafe(task.cancel)
            thread.join(_STOP_GRACE_S)
