"""The in-process runner: an asyncio loop in a background thread, bounded concurrency.

Async graphs overlap on the loop; sync graphs run whole in a bounded thread pool. Results
reach the caller's thread through a bounded queue, so a slow consumer (the store) slows
the producer instead of piling results up in memory.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final, cast

from wtb.events import EventBus
from wtb.executor import CellExecutor
from wtb.job import BatchJob
from wtb.results import Cell, CellResult

_DONE: Final = object()


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

        def put(item: object) -> None:
            # Blocking put, but never forever: a closed consumer sets `stop`.
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        async def main() -> None:
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(concurrency, thread_name_prefix="wtb-cell") as pool:
                loop.set_default_executor(pool)
                executor = CellExecutor(
                    job, emit=bus.publish, thread_pool=pool, backoff_scale=self._backoff_scale
                )
                source = iter(cells)
                in_flight: set[asyncio.Task[CellResult]] = set()
                exhausted = False
                while not stop.is_set():
                    while not exhausted and len(in_flight) < concurrency:
                        cell = next(source, None)
                        if cell is None:
                            exhausted = True
                        else:
                            in_flight.add(asyncio.create_task(executor.run(cell)))
                    if not in_flight:
                        break
                    done, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        item = task.result()
                        while not stop.is_set():
                            try:
                                results.put_nowait(item)
                                break
                            except queue.Full:
                                await asyncio.sleep(0.002)
                for task in in_flight:
                    task.cancel()

        def thread_main() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                put(_Failure(exc))
            finally:
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
            thread.join(timeout=10)
