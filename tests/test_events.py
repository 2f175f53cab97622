"""The in-process event bus: subscribers by kind, unsubscribing, publishing from threads."""

from __future__ import annotations

import threading

from wtb import events
from wtb.events import Event, EventBus


def test_subscribers_get_the_kinds_they_asked_for_until_they_unsubscribe() -> None:
    bus = EventBus()
    everything: list[Event] = []
    failures: list[Event] = []
    bus.subscribe(everything.append)
    stop = bus.subscribe(failures.append, frozenset({events.CELL_ATTEMPT_FAILED}))
    bus.publish(Event(events.CELL_ATTEMPT_STARTED, "k"))
    bus.publish(Event(events.CELL_ATTEMPT_FAILED, "k"))
    stop()
    stop()  # twice is harmless
    bus.publish(Event(events.CELL_ATTEMPT_FAILED, "k"))
    assert [e.kind for e in everything] == [
        events.CELL_ATTEMPT_STARTED,
        events.CELL_ATTEMPT_FAILED,
        events.CELL_ATTEMPT_FAILED,
    ]
    assert [e.kind for e in failures] == [events.CELL_ATTEMPT_FAILED]


def test_the_same_handler_twice_is_two_subscriptions() -> None:
    bus = EventBus()
    seen: list[Event] = []
    first = bus.subscribe(seen.append)
    bus.subscribe(seen.append)
    bus.publish(Event(events.BATCH_STARTED))
    first()
    bus.publish(Event(events.BATCH_FINISHED))
    assert [e.kind for e in seen] == [events.BATCH_STARTED] * 2 + [events.BATCH_FINISHED]


def test_publishing_from_many_threads_while_subscribing_loses_nothing() -> None:
    bus = EventBus()
    seen: list[Event] = []
    lock = threading.Lock()

    def record(event: Event) -> None:
        with lock:
            seen.append(event)

    bus.subscribe(record)

    def publish() -> None:
        for _ in range(500):
            bus.publish(Event(events.CELL_ATTEMPT_STARTED, "k"))

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(50):  # subscriptions coming and going meanwhile
        bus.subscribe(lambda _: None)()
    for thread in threads:
        thread.join()
    assert len(seen) == 2000
