"""A thread pool that writes off workers stuck on abandoned (timed-out) cells.

A sync graph cannot be interrupted: when its cell times out, its thread runs on. A plain
ThreadPoolExecutor would then lose that slot (later cells wait, time out without running)
and would join the stuck thread at shutdown. Here the stuck worker is written off: a
replacement starts at once, and the stuck thread, a daemon, exits when its call returns.
"""

from __future__ import annotations

import functools
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Job = tuple[Future[Any], Callable[[], Any]] | None

_submitted: ContextVar[list[Future[Any]] | None] = ContextVar("wtb_submitted", default=None)

_written_off: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_written_off_lock = threading.Lock()


def write_off(thread: threading.Thread) -> None:
    """Note a thread stuck on an abandoned call (see `stuck_threads`)."""
    with _written_off_lock:
        _written_off.add(thread)


def stuck_threads() -> int:
    """Threads written off whose call has still not returned.

    They are daemons, but a stuck sync node may itself wait on non-daemon threads (LangGraph
    runs parallel branches in its own pool), which the interpreter joins at exit: a command
    that finishes with stuck threads left should end its process without waiting for them.
    """
    with _written_off_lock:
        return sum(1 for thread in _written_off if thread.is_alive())


class ElasticThreadPool(ThreadPoolExecutor):
    """Fixed-size pool of daemon workers; `abandon` replaces workers stuck on given calls.

    It subclasses ThreadPoolExecutor only to be accepted as an asyncio loop's default
    executor (LangGraph runs the sync nodes of async graphs there); every method that
    matters is its own, and none of the base class's threads are ever started.
    """

    def __init__(self, size: int, name: str = "wtb-cell") -> None:
        super().__init__(max_workers=size, thread_name_prefix=name)
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._name = name
        self._live = 0
        self._running: dict[Future[Any], tuple[threading.Event, threading.Thread]] = {}
        """The retire flag and thread of the worker running each future."""
        self._closed = False
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> None:
        self._live += 1
        threading.Thread(target=self._work, name=f"{self._name}-{self._live}", daemon=True).start()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if self._closed:
            raise RuntimeError("the pool is shut down")
        future: Future[T] = Future()
        tracked = _submitted.get()
        if tracked is not None:
            tracked.append(future)
        self._jobs.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    @contextmanager
    def tracking(self) -> Iterator[list[Future[Any]]]:
        """Collect the calls submitted from this context (and tasks it starts), e.g. by
        LangGraph running a cell's sync nodes, so that `abandon` can write them off."""
        submitted: list[Future[Any]] = []
        token = _submitted.set(submitted)
        try:
            yield submitted
        finally:
            _submitted.reset(token)

    def abandon(self, futures: list[Future[Any]]) -> None:
        """Give up on these calls: cancel the queued ones; a worker running one of the rest
        is written off (it retires when its call returns) and replaced at once."""
        for future in futures:
            if future.cancel():
                continue
            with self._lock:
                found = self._running.get(future)
                if found is None or found[0].is_set() or self._closed:
                    continue
                retire, thread = found
                retire.set()
                write_off(thread)
                self._live -= 1
                self._spawn()

    def _work(self) -> None:
        retire = threading.Event()
        me = threading.current_thread()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, call = job
            with self._lock:  # with `abandon`: a running call is always found in _running
                running = future.set_running_or_notify_cancel()
                if running:
                    self._running[future] = (retire, me)
            if running:
                try:
                    result = call()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    with self._lock:
                        self._running.pop(future, None)
            if retire.is_set():
                return

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Idle workers stop; a worker stuck on a call is a daemon and is never waited for."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live = self._live
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in range(live):
            self._jobs.put(None)
