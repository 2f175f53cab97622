"""An in-process event bus. Every state change of a batch is an Event; the store audits them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

BATCH_STARTED: Final = "batch.started"
BATCH_FINISHED: Final = "batch.finished"
BATCH_FAILED: Final = "batch.failed"
CELL_ATTEMPT_STARTED: Final = "cell.attempt.started"
CELL_ATTEMPT_SUCCEEDED: Final = "cell.attempt.succeeded"
CELL_ATTEMPT_FAILED: Final = "cell.attempt.failed"
CELL_ATTEMPT_RETRIED: Final = "cell.attempt.retried"

EVENT_KINDS: Final = frozenset(
    {
        BATCH_STARTED,
        BATCH_FINISHED,
        BATCH_FAILED,
        CELL_ATTEMPT_STARTED,
        CELL_ATTEMPT_SUCCEEDED,
        CELL_ATTEMPT_FAILED,
        CELL_ATTEMPT_RETRIED,
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    subject: str | None = None
    """What changed: a cell key for cell events, None for the batch itself."""
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


Handler = Callable[[Event], None]


class EventBus:
    """Synchronous publish/subscribe; publishing is safe from any thread.

    Handlers run in the publisher's thread and must be quick and thread-safe (the store's
    audit sink only appends to a buffer that is flushed with the next batch of results).
    The handlers are an immutable tuple, replaced on (un)subscribe: publishing, once per
    attempt event on the hot path, takes no lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: tuple[tuple[Handler, frozenset[str] | None], ...] = ()

    def subscribe(
        self, handler: Handler, kinds: frozenset[str] | None = None
    ) -> Callable[[], None]:
        """Call `handler` for events of `kinds` (all when None); returns an unsubscribe."""
        entry = (handler, kinds)
        with self._lock:
            self._handlers = (*self._handlers, entry)

        def unsubscribe() -> None:
            with self._lock:
                self._handlers = tuple(h for h in self._handlers if h is not entry)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for handler, kinds in self._handlers:
            if kinds is None or event.kind in kinds:
                handler(event)
