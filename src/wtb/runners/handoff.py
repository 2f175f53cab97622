"""Results from the threads that produce them to the one thread that records them.

A plain queue wakes the consumer for every result. Each wake-up makes two threads trade
the GIL and the CPU: on a fast, CPU-bound graph that costs about a tenth of the run. Here
the consumer is woken for a batch of results, or once the oldest waiting result is `linger`
seconds old, whichever comes first, so a slow run still reports each result promptly.
The hand-off is bounded: a slow consumer (the store) slows the producers instead of
piling results up in memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Final, Generic, TypeVar

T = TypeVar("T")

BATCH: Final = 32
LINGER_S: Final = 0.05


class Handoff(Generic[T]):
    """A bounded hand-off of items; `take` returns them in batches."""

    def __init__(self, capacity: int, *, batch: int = BATCH, linger: float = LINGER_S) -> None:
        self._capacity = max(capacity, batch)
        self._batch = batch
        self._linger = linger
        self._items: deque[T] = deque()
        self._urgent = False
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    def put(self, item: T, stop: threading.Event, *, urgent: bool = False) -> None:
        """Add `item`, waiting while the hand-off is full, unless `stop` is set (then the
        item is dropped: nobody is taking any more). `urgent` wakes the consumer at once."""
        with self._not_full:
            while len(self._items) >= self._capacity:
                if stop.is_set():
                    return
                self._not_full.wait(0.1)
            self._add(item, urgent)

    def try_put(self, item: T) -> bool:
        """Add `item` when there is room, without waiting."""
        with self._not_full:
            if len(self._items) >= self._capacity:
                return False
            self._add(item, False)
            return True

    def _add(self, item: T, urgent: bool) -> None:
        self._items.append(item)
        self._urgent = self._urgent or urgent
        if urgent or len(self._items) in (1, self._batch):
            self._not_empty.notify()

    def take(self) -> list[T]:
        """Wait for items and return all that are there: when a batch is full, an urgent
        item came, or the oldest has waited `linger` seconds."""
        with self._not_empty:
            while not self._items:
                self._not_empty.wait()
            deadline = time.monotonic() + self._linger
            while len(self._items) < self._batch and not self._urgent:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._not_empty.wait(left)
            items = list(self._items)
            self._items.clear()
            self._urgent = False
            self._not_full.notify_all()
            return items
