"""Run one cell: invoke the combination's graph on the case, retry transient failures, score it.

Every runner (inline, Ray actors) executes cells through this class, so attempts, timeouts,
usage and evaluation behave the same wherever a cell runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from wtb import events
from wtb._jsonable import clean_text, jsonable
from wtb.cells.retry import RetryPolicy
from wtb.cells.threads import ElasticThreadPool
from wtb.domain import Attempt, AttemptStatus, Case, Cell, CellResult, Combination
from wtb.evaluators import EvalContext, Evaluator
from wtb.evaluators.build import build_evaluators, evaluate
from wtb.graphs import VariantGraphs
from wtb.importing import extend_sys_path
from wtb.runs.spec import RunSpec
from wtb.usage import UsageMeter, combine, metering, usage_from_state

EmitEvent = Callable[[events.Event], None]
T = TypeVar("T")

_MAX_MESSAGE = 2000


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A cell whose last attempt failed transiently: try again after `delay` seconds."""

    attempts: tuple[Attempt, ...]
    delay: float


class Claim(Protocol):
    def release(self) -> bool:
        """End the watch: True when the attempt is still ours, False when it was taken over."""
        ...


class AttemptGuard(Protocol):
    """Watches the deadline of attempts that run in a thread which cannot be interrupted."""

    def watch(
        self, cell: Cell, attempts: list[Attempt], number: int, at: datetime, t0: float
    ) -> Claim: ...


def _invoke_sync(graph: Any, inputs: dict[str, Any]) -> Any:
    return graph.invoke(inputs)


async def _in_pool(pool: ElasticThreadPool, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.wrap_future(pool.submit(fn, *args))


def _describe(exc: BaseException) -> tuple[str, str]:
    message = clean_text(str(exc) or repr(exc))
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return type(exc).__name__, message


class CellExecutor:
    """Executes cells of one RunSpec; builds each combination's graph once per process."""

    def __init__(
        self,
        job: RunSpec,
        *,
        emit: EmitEvent,
        backoff_scale: float = 1.0,
    ) -> None:
        extend_sys_path(job.python_path)
        self._job = job
        self._cases = job.case_index()
        self._emit = emit
        self._graphs = VariantGraphs(job.workflow)
        self._evaluators: list[Evaluator] = build_evaluators(job.batch.evaluators)
        self._retry = RetryPolicy.from_spec(job.batch.retry, scale=backoff_scale)
        self._timeout = job.batch.timeout_seconds

    def is_sync(self, combination: Combination) -> bool:
        """Whether the combination's graph is sync-only (it can run whole in one thread)."""
        return self._graphs.get(combination)[1]

    # -- the attempt protocol, shared by the async and the threaded way of running -----

    def _started(self, cell: Cell, number: int) -> tuple[datetime, float]:
        self._emit(events.Event(events.CELL_ATTEMPT_STARTED, cell.key, {"attempt": number}))
        return datetime.now(UTC), time.perf_counter()

    def _succeeded(self, cell: Cell, number: int, at: datetime, t0: float) -> Attempt:
        self._emit(events.Event(events.CELL_ATTEMPT_SUCCEEDED, cell.key, {"attempt": number}))
        return Attempt(number, "succeeded", at, (time.perf_counter() - t0) * 1000)

    def _failed(
        self, cell: Cell, number: int, at: datetime, t0: float, exc: BaseException | None
    ) -> Attempt:
        """The failed attempt (exc None: it timed out); emits its event."""
        status: AttemptStatus
        if exc is None:
            status, etype, emsg = "timeout", "Timeout", f"attempt exceeded {self._timeout:g} s"
        else:
            status = "transient" if self._retry.is_transient(exc) else "failed"
            etype, emsg = _describe(exc)
        attempt = Attempt(number, status, at, (time.perf_counter() - t0) * 1000, etype, emsg)
        self._emit(
            events.Event(
                events.CELL_ATTEMPT_FAILED,
                cell.key,
                {"attempt": number, "status": status, "error": etype, "message": emsg},
            )
        )
        return attempt

    def _after_failure(
        self,
        cell: Cell,
        attempts: list[Attempt],
        number: int,
        at: datetime,
        t0: float,
        exc: BaseException | None,
    ) -> CellResult | float:
        """Record a failed attempt: the cell's result when it is over, else the delay
        before the next attempt."""
        attempts.append(self._failed(cell, number, at, t0, exc))
        delay = self.retry_delay(cell, attempts)
        return self.failure(cell, attempts) if delay is None else delay

    def retry_delay(self, cell: Cell, attempts: list[Attempt]) -> float | None:
        """Seconds to wait before the next attempt, or None when the cell is done failing."""
        delay = self._retry.next_delay(attempts)
        if delay is not None:
            self._emit(
                events.Event(
                    events.CELL_ATTEMPT_RETRIED,
                    cell.key,
                    {"attempt": attempts[-1].number + 1, "delay_s": delay},
                )
            )
        return delay

    # -- asyncio -------------------------------------------------------------------------

    async def run(self, cell: Cell, pool: ElasticThreadPool) -> CellResult:
        """Run a cell on the event loop, attempts and their backoff included: async graphs
        directly, sync ones in `pool` (which must also be the loop's default executor,
        where LangGraph runs sync nodes)."""
        attempts: tuple[Attempt, ...] = ()
        while True:
            step = await self.attempt(cell, pool, attempts)
            if isinstance(step, CellResult):
                return step
            await asyncio.sleep(step.delay)
            attempts = step.attempts

    async def attempt(
        self, cell: Cell, pool: ElasticThreadPool, attempts: Sequence[Attempt] = ()
    ) -> CellResult | RetryLater:
        """Make the cell's next attempt after `attempts` (numbering and the retry budget
        continue from them): the cell's result when it is over, or when to try again.

        The Ray runner calls this, one attempt per call, so that the driver holds every
        attempt's record and the backoff does not hold a worker's slot.
        """
        case = self._cases[cell.case_id]
        graph, sync = self._graphs.get(cell.combination)
        history = list(attempts)
        number = len(history) + 1
        at, t0 = self._started(cell, number)
        deadline = asyncio.timeout(self._timeout)
        error: BaseException | None
        try:
            with pool.tracking() as submitted:
                async with deadline:
                    with metering() as meter:
                        state = await self._invoke(pool, graph, sync, case.inputs)
        except TimeoutError as exc:
            # Ours when the deadline expired; otherwise the graph raised it (transient).
            error = None if deadline.expired() else exc
            if deadline.expired():
                # Threads still running this attempt's sync code are stuck: replace them.
                pool.abandon(submitted)
        except Exception as exc:
            error = exc
        else:
            history.append(self._succeeded(cell, number, at, t0))
            # Scoring runs user evaluators, which may block (an HTTP call to a judge):
            # never on the loop, where it would stall every other cell.
            return await _in_pool(pool, self._result, cell, case, state, history, meter)
        step = await _in_pool(pool, self._after_failure, cell, history, number, at, t0, error)
        if isinstance(step, CellResult):
            return step
        return RetryLater(tuple(history), step)

    async def _invoke(
        self, pool: ElasticThreadPool, graph: Any, sync: bool, inputs: dict[str, Any]
    ) -> Any:
        if not sync:
            return await graph.ainvoke(inputs)
        # One thread hop per cell rather than one per node: sync graphs run whole in a worker.
        # The worker runs in a copy of this task's context, so report_usage reaches the meter.
        context = contextvars.copy_context()
        future = pool.submit(context.run, _invoke_sync, graph, inputs)
        return await asyncio.wrap_future(future)

    # -- threads -------------------------------------------------------------------------

    def run_sync(
        self,
        cell: Cell,
        guard: AttemptGuard,
        attempts: list[Attempt] | None = None,
        *,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> CellResult | None:
        """Run a cell of a sync-only graph in this thread, from attempt len(attempts) + 1.

        `guard` watches each attempt's deadline. When an attempt overruns, the guard takes
        the cell over (records the timeout, continues elsewhere) and this returns None once
        the graph finally returns: the caller's thread is then written off. When
        `keep_going()` turns false (the run was stopped), no further attempt starts.
        """
        case = self._cases[cell.case_id]
        graph, _ = self._graphs.get(cell.combination)
        attempts = list(attempts or [])
        number = len(attempts) + 1
        while True:
            at, t0 = self._started(cell, number)
            claim = guard.watch(cell, attempts, number, at, t0)
            error: BaseException | None = None
            with metering() as meter:
                try:
                    state = graph.invoke(case.inputs)
                except Exception as exc:
                    error = exc
                except BaseException:
                    if claim.release():
                        raise
                    return None
            if not claim.release():
                return None
            if error is None:
                attempts.append(self._succeeded(cell, number, at, t0))
                return self._result(cell, case, state, attempts, meter)
            step = self._after_failure(cell, attempts, number, at, t0, error)
            if isinstance(step, CellResult):
                return step
            if not keep_going():
                return self.failure(cell, attempts)
            time.sleep(step)
            number += 1

    def timed_out(self, cell: Cell, number: int, at: datetime, t0: float) -> Attempt:
        """The attempt record of an attempt its guard gave up on."""
        return self._failed(cell, number, at, t0, None)

    # -- results -------------------------------------------------------------------------

    def failure(self, cell: Cell, attempts: list[Attempt]) -> CellResult:
        """The result of a cell whose last attempt failed."""
        return self._finish(cell, self._cases[cell.case_id], None, attempts, None, None)

    def _result(
        self, cell: Cell, case: Case, state: Any, attempts: list[Attempt], meter: UsageMeter
    ) -> CellResult:
        tokens, cost = combine(meter, usage_from_state(state))
        return self._finish(cell, case, state, attempts, tokens, cost)

    def _finish(
        self,
        cell: Cell,
        case: Case,
        state: Any,
        attempts: list[Attempt],
        tokens: int | None,
        cost: float | None,
    ) -> CellResult:
        last = attempts[-1]
        ok = last.status == "succeeded"
        latency_ms = last.duration_ms
        output = jsonable(state) if ok else None
        ctx = EvalContext(
            case=case,
            inputs=case.inputs,
            expected=case.expected,
            output=(state if isinstance(state, dict) else output) if ok else None,
            status="succeeded" if ok else "failed",
            error_type=None if ok else last.error_type,
            latency_ms=latency_ms,
            tokens=tokens,
            cost=cost,
        )
        metrics, evaluator_errors = evaluate(self._evaluators, ctx)
        return CellResult(
            cell=cell,
            status="succeeded" if ok else "failed",
            latency_ms=latency_ms,
            finished_at=datetime.now(UTC),
            output=output,
            metrics=metrics,
            tokens=tokens,
            cost=cost,
            error_type=None if ok else last.error_type,
            error_message=None if ok else last.error_message,
            evaluator_errors=evaluator_errors,
            attempts=tuple(attempts),
        )
