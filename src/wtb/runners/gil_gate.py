"""How many worker threads may run cells at once, lowered while the GIL is the bottleneck.

Python threads run Python code one at a time. When a sync graph is CPU-bound, more threads
than one only take turns holding the GIL, and every turn costs: two threads running a
CPU-bound graph finish about a fifth later than one thread running the same cells. Worse,
each cell's measured latency then includes the time it waited for the GIL. `concurrency`
is what the user allows in flight; it pays off when cells wait on I/O (a model, a tool).

The gate watches the process's CPU time over short windows. The GIL is the bottleneck when
the process uses about one core (no more: code that releases the GIL, such as NumPy, uses
more, and then threads do run in parallel). Then it lets half the threads run cells and
watches again: when the process still uses as much CPU, the threads were not needed and
the gate stays lowered; when CPU use fell, the cells needed them to overlap their I/O and
the gate opens again and holds. While the process uses little CPU (cells wait on I/O),
the gate opens a thread at a time up to `concurrency`.

Threads never lose a cell to the gate: a thread waits at the gate only between cells.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

WINDOW_S: Final = 0.25
"""CPU use is measured over windows of this length."""
ONE_CORE: Final = 0.85
"""From this much CPU (in cores) up, the process is taken to be held by the GIL..."""
PARALLEL: Final = 1.3
"""...unless it uses this much or more: then threads run in parallel (the GIL released)."""
IDLE: Final = 0.6
"""Below this, cells mostly wait: another thread may help."""
KEPT_SHARE: Final = 0.9
"""After lowering, CPU use must stay at this share of before for the lowering to stand."""
HOLD_WINDOWS: Final = 20
"""After a lowering was undone, the gate lowers no more for this many windows."""


class GilGate:
    """Admits worker slots `0 .. allowed-1` to run cells; `allowed` moves with CPU use.

    Slot 0 always runs, so a run always progresses. `tick` is called often from one thread
    (the workers' watchdog); `cpu` and `now` are the clocks (injectable for tests).
    """

    def __init__(
        self,
        concurrency: int,
        *,
        cpu: Callable[[], float] = time.process_time,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self._cpu = cpu
        self._now = now
        self._allowed = concurrency
        self._changed = threading.Condition()
        self._window_start = (now(), cpu())
        self._probe: tuple[int, float] | None = None
        """`allowed` and CPU use before the last lowering, while its effect is measured."""
        self._hold = 0

    @property
    def allowed(self) -> int:
        return self._allowed

    def admit(self, slot: int, keep_going: Callable[[], bool]) -> bool:
        """Wait until `slot` may run a cell; False when `keep_going()` turns false first."""
        with self._changed:
            while slot >= self._allowed:
                if not keep_going():
                    return False
                self._changed.wait(WINDOW_S)
        return keep_going()

    def wake(self) -> None:
        """Let waiting slots look at `keep_going` again (the run is stopping)."""
        with self._changed:
            self._changed.notify_all()

    def tick(self) -> None:
        """At the end of each window, move `allowed` by the CPU use measured over it."""
        now, cpu = self._now(), self._cpu()
        started, cpu_before = self._window_start
        if now - started < WINDOW_S:
            return
        self._window_start = (now, cpu)
        self._set(self._decide((cpu - cpu_before) / (now - started)))

    def _decide(self, cores: float) -> int:
        allowed = self._allowed
        if self._probe is not None:
            (previous, before), self._probe = self._probe, None
            if cores < before * KEPT_SHARE:  # the threads were doing useful overlap
                self._hold = HOLD_WINDOWS
                return previous
        if cores < IDLE and allowed < self.concurrency:
            return allowed + 1
        if self._hold > 0:  # holds off lowering only: cells that turn to I/O get threads
            self._hold -= 1
            return allowed
        if ONE_CORE <= cores < PARALLEL and allowed > 1:
            self._probe = (allowed, cores)
            return max(1, allowed // 2)
        return allowed

    def _set(self, allowed: int) -> None:
        if allowed != self._allowed:
            with self._changed:
                self._allowed = allowed
                self._changed.notify_all()
