"""Sync-only graphs: worker threads run whole cells, with no event loop and no hand-off.

Each worker pulls a cell, runs it (graph, retries, evaluation) in its own thread and hands
the result over. This costs about nothing beyond the user's graph. A sync graph cannot be
interrupted, so a watchdog enforces each attempt's timeout from outside: it records the
timeout, writes the stuck worker off, and starts a replacement that carries the cell on
(retry or final failure). The stuck thread, a daemon, exits when its call returns.
While the cells are CPU-bound, a gate lets fewer threads run them (`wtb.runners.gil_gate`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from wtb.cells.attempts import CellAttempt, Decision
from wtb.cells.executor import CellExecutor
from wtb.cells.threads import write_off
from wtb.domain import Cell, CellResult
from wtb.runners.gil_gate import GilGate

_TICK_S: Final = 0.05


@dataclass(eq=False)
class _Watch:
    """One attempt being watched (the executor's Claim)."""

    owner: Deadlines
    attempt: CellAttempt
    deadline: float
    thread: threading.Thread = field(default_factory=threading.current_thread)
    expired: bool = field(default=False)

    def release(self) -> bool:
        return self.owner.release(self)


class Deadlines:
    """The AttemptGuard of worker threads: a watchdog thread over every running attempt."""

    def __init__(
        self,
        timeout: float,
        on_expired: Callable[[_Watch], None],
        on_tick: Callable[[], None] = lambda: None,
    ) -> None:
        self._timeout = timeout
        self._on_expired = on_expired
        self._on_tick = on_tick
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._patrol, name="wtb-watchdog", daemon=True)
        self._thread.start()

    def watch(self, attempt: CellAttempt) -> _Watch:
        entry = _Watch(self, attempt, time.monotonic() + self._timeout)
        with self._lock:
            self._watches.add(entry)
        return entry

    def release(self, entry: _Watch) -> bool:
        with self._lock:
            self._watches.discard(entry)
            return not entry.expired

    def _patrol(self) -> None:
        tick = min(_TICK_S, self._timeout / 10)
        while not self._stopped.wait(tick):
            now = time.monotonic()
            with self._lock:
                expired = [w for w in self._watches if w.deadline <= now]
                for entry in expired:
                    entry.expired = True
                    self._watches.discard(entry)
            for entry in expired:
                self._on_expired(entry)
            self._on_tick()

    def stop(self) -> None:
        self._stopped.set()


class CellWorkers:
    """`concurrency` worker threads over one cell source; results go to `put`.

    `put(None)` marks the end: every cell taken from the source has a result, or the run
    was stopped (`stop`, set by the consumer) or halted by an unexpected error (`failure`).
    """

    def __init__(
        self,
        executor: CellExecutor,
        cells: Iterator[Cell],
        concurrency: int,
        timeout: float,
        put: Callable[[CellResult | None], None],
        stop: threading.Event,
    ) -> None:
        self._executor = executor
        self._cells = cells
        self._source_lock = threading.Lock()
        self._put = put
        self._stop = stop
        self._halt = threading.Event()
        self._exhausted = threading.Event()
        self._lock = threading.Lock()
        self._live = 0
        self._numbered = 0
        self._concurrency = concurrency
        self._slots: dict[threading.Thread, int] = {}
        self.failure: BaseException | None = None
        """The first unexpected error of a worker (a bug, not a cell failure)."""
        self.gate = GilGate(concurrency)
        self._deadlines = Deadlines(timeout, self._take_over, self.gate.tick)

    def start(self) -> None:
        with self._lock:
            self._live = self._concurrency
        for slot in range(self._concurrency):
            self._start_thread(slot, None)

    def _going(self) -> bool:
        return not (self._stop.is_set() or self._halt.is_set())

    def _taking(self) -> bool:
        return self._going() and not self._exhausted.is_set()

    def _start_thread(self, slot: int, carry: CellAttempt | None) -> None:
        """A worker thread for `slot`, already counted in `_live`."""
        with self._lock:
            self._numbered += 1
            name = f"wtb-worker-{self._numbered}"
        thread = threading.Thread(target=self._work, args=(carry,), name=name, daemon=True)
        with self._lock:
            self._slots[thread] = slot
        try:
            thread.start()
        except BaseException:
            self._retire()
            raise

    def _take_over(self, entry: _Watch) -> None:
        """An attempt overran: its worker is written off; a replacement takes its slot, ends
        the attempt as timed out and carries the cell on. A stopped run starts nothing: the
        slot just ends."""
        write_off(entry.thread)
        with self._lock:
            slot = self._slots.pop(entry.thread)
        if self._going():
            self._start_thread(slot, entry.attempt)
        else:
            self._retire()

    def _next(self) -> Cell | None:
        if not self.gate.admit(self._slots[threading.current_thread()], self._taking):
            return None
        with self._source_lock:
            if not self._going():
                return None
            cell = next(self._cells, None)
        if cell is None:
            self._exhausted.set()
            self.gate.wake()
        return cell

    def _work(self, carry: CellAttempt | None) -> None:
        try:
            if carry is not None and not self._run(carry.cell, carry.timed_out()):
                return
            while (cell := self._next()) is not None:
                if not self._run(cell, None):
                    return
        except BaseException as exc:  # a bug, not a cell failure: end the run loudly
            if self.failure is None:
                self.failure = exc
            self._halt.set()
        self._retire()

    def _run(self, cell: Cell, after: Decision | None) -> bool:
        """Run the cell to its result (from `after`, the decision on an attempt that timed
        out); False when this worker is written off meanwhile (a replacement carries on)."""
        result = self._executor.run_sync(cell, self._deadlines, after, keep_going=self._going)
        if result is None:
            return False
        self._put(result)
        return True

    def _retire(self) -> None:
        with self._lock:
            self._live -= 1
            last = self._live == 0
        if last:
            self._deadlines.stop()
            self._put(None)
        else:
            self.gate.wake()
