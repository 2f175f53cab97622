"""The workflow's code ending its process: one failed cell, never the end of the run.

A node (or an evaluator, or a factory) that raises `SystemExit` (`sys.exit(3)`),
`KeyboardInterrupt` or another `BaseException` that is not an `Exception` fails its cell
like any error: the attempt is recorded with the exception's type and, for `SystemExit`,
its exit code, and it is not retried (the code asked to stop, nothing transient). A real
Ctrl-C never looks like this: signals reach the main thread of `wtb run`, which runs no
cell (cells run on worker threads, an event loop in a thread of its own, or Ray actors).

asyncio would end its event loop on `SystemExit` or `KeyboardInterrupt` raised in any task
(LangGraph runs parallel nodes in tasks of their own), so loops that run cells wrap each
task's coroutine (`guarded_task_factory`): such an exception leaves the task as `CodeExit`,
an ordinary `Exception` carrying it, and the attempt records what was carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

TaskFactory = Callable[..., "asyncio.Future[Any]"]


class CodeExit(Exception):
    """A `BaseException` raised by the workflow's code, carried as an ordinary exception."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(str(raised))
        self.raised = raised


def is_code_exit(exc: BaseException) -> bool:
    """Whether `exc` is the workflow's code ending its process (or carries such an end):
    not an `Exception`, and not asyncio's cancellation, which is WTB's own."""
    if isinstance(exc, CodeExit):
        return True
    return not isinstance(exc, Exception | asyncio.CancelledError | GeneratorExit)


def carried(exc: BaseException) -> BaseException:
    """The exception the workflow's code raised: `exc`, or the one a CodeExit carries."""
    return exc.raised if isinstance(exc, CodeExit) else exc


def exit_message(exc: BaseException) -> str | None:
    """What an attempt's message says of a code exit (None for an ordinary exception)."""
    exc = carried(exc)
    if isinstance(exc, SystemExit):
        code = exc.code
        shown = "None (0)" if code is None else repr(code)
        return (
            f"exit code {shown}: the workflow's code called sys.exit() or raised "
            "SystemExit; WTB records it as this cell's failure and goes on"
        )
    if isinstance(exc, KeyboardInterrupt):
        detail = str(exc)
        return (
            "the workflow's code raised KeyboardInterrupt (not a Ctrl-C to WTB, which "
            "stops the run); WTB records it as this cell's failure and goes on"
            + (f": {detail}" if detail else "")
        )
    if not isinstance(exc, Exception):
        detail = str(exc) or repr(exc)
        return (
            f"{detail} (a BaseException that is not an Exception, raised by the "
            "workflow's code; WTB records it as this cell's failure and goes on)"
        )
    return None


class _Guarded(Coroutine[Any, Any, T]):
    """A task's coroutine, passed through step by step, whose SystemExit or
    KeyboardInterrupt leaves as `CodeExit`. A coroutine object rather than an `async def`
    around it: a task cancelled before its first step then closes the user's coroutine as
    asyncio would, instead of leaving it never awaited."""

    def __init__(self, inner: Coroutine[Any, Any, T]) -> None:
        self._inner = inner
        self.__name__ = getattr(inner, "__name__", type(inner).__name__)
        self.__qualname__ = getattr(inner, "__qualname__", self.__name__)

    def send(self, value: Any) -> Any:
        try:
            return self._inner.send(value)
        except (SystemExit, KeyboardInterrupt) as exc:
            raise CodeExit(exc) from exc

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        try:
            if val is None and tb is None:
                return self._inner.throw(typ)
            return self._inner.throw(typ, val, tb)
        except (SystemExit, KeyboardInterrupt) as exc:
            raise CodeExit(exc) from exc

    def close(self) -> None:
        self._inner.close()

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def __repr__(self) -> str:
        return repr(self._inner)


def guarded_task_factory(inner: TaskFactory | None) -> TaskFactory:
    """A task factory (for `loop.set_task_factory`) over `inner` (the loop's, None for
    asyncio's own) whose tasks turn SystemExit and KeyboardInterrupt into `CodeExit`."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        if asyncio.iscoroutine(coro):
            coro = _Guarded(coro)
        if inner is not None:
            return inner(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    return factory


def guard_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Make the running loop's tasks carry code exits (see `guarded_task_factory`)."""
    loop.set_task_factory(guarded_task_factory(loop.get_task_factory()))
