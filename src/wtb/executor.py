"""Run one cell: invoke the combination's graph on the case, retry transient failures, score it.

Every runner (inline, Ray actors) executes cells through this class, so attempts, timeouts,
usage and evaluation behave the same wherever a cell runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from wtb import events
from wtb.evaluators import EvalContext, Evaluator, build_evaluators, evaluate
from wtb.graphs import VariantGraphs
from wtb.job import BatchJob
from wtb.jsonable import clean_text, jsonable
from wtb.results import Attempt, AttemptStatus, Cell, CellResult
from wtb.retry import RetryPolicy
from wtb.runners.threads import ElasticThreadPool
from wtb.usage import combine, metering, usage_from_state

EmitEvent = Callable[[events.Event], None]

_MAX_MESSAGE = 2000


def _invoke_sync(graph: Any, inputs: dict[str, Any]) -> Any:
    return graph.invoke(inputs)


def _describe(exc: BaseException) -> tuple[str, str]:
    message = clean_text(str(exc) or repr(exc))
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return type(exc).__name__, message


class CellExecutor:
    """Executes cells of one BatchJob; builds each combination's graph once per process."""

    def __init__(
        self,
        job: BatchJob,
        *,
        emit: EmitEvent,
        thread_pool: ElasticThreadPool,
        backoff_scale: float = 1.0,
    ) -> None:
        for entry in reversed(job.python_path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        self._job = job
        self._cases = job.case_index()
        self._emit = emit
        self._pool = thread_pool
        self._graphs = VariantGraphs(job.workflow)
        self._evaluators: list[Evaluator] = build_evaluators(job.batch.evaluators)
        self._retry = RetryPolicy.from_spec(job.batch.retry, scale=backoff_scale)
        self._timeout = job.batch.timeout_seconds

    async def run(self, cell: Cell) -> CellResult:
        case = self._cases[cell.case_id]
        graph, sync = self._graphs.get(cell.combination)
        attempts: list[Attempt] = []
        subject = cell.key
        state: Any = None
        error: BaseException | None = None
        tokens: int | None = None
        cost: float | None = None
        started = time.perf_counter()
        for number in range(1, self._retry.max_attempts + 1):
            at = datetime.now(UTC)
            self._emit(events.Event(events.CELL_ATTEMPT_STARTED, subject, {"attempt": number}))
            t0 = time.perf_counter()
            status: AttemptStatus
            deadline = asyncio.timeout(self._timeout)
            try:
                with self._pool.tracking() as submitted:
                    async with deadline:
                        with metering() as meter:
                            state = await self._invoke(graph, sync, case.inputs)
                tokens, cost = combine(meter, usage_from_state(state))
                error = None
                status = "succeeded"
            except TimeoutError as exc:
                # Ours when the deadline expired; otherwise the graph raised it (still transient).
                error, status = exc, "timeout" if deadline.expired() else "transient"
                if deadline.expired():
                    # Threads still running this attempt's sync code are stuck: replace them.
                    self._pool.abandon(submitted)
            except Exception as exc:
                error = exc
                status = "transient" if self._retry.is_transient(exc) else "failed"
            duration = (time.perf_counter() - t0) * 1000
            if error is None:
                attempts.append(Attempt(number, status, at, duration))
                self._emit(
                    events.Event(events.CELL_ATTEMPT_SUCCEEDED, subject, {"attempt": number})
                )
                break
            etype, emsg = _describe(error)
            if status == "timeout":
                etype, emsg = "Timeout", f"attempt exceeded {self._timeout:g} s"
            attempts.append(Attempt(number, status, at, duration, etype, emsg))
            self._emit(
                events.Event(
                    events.CELL_ATTEMPT_FAILED,
                    subject,
                    {"attempt": number, "status": status, "error": etype, "message": emsg},
                )
            )
            if status == "failed" or number == self._retry.max_attempts:
                break
            delay = self._retry.delay(number)
            self._emit(
                events.Event(
                    events.CELL_ATTEMPT_RETRIED, subject, {"attempt": number + 1, "delay_s": delay}
                )
            )
            await asyncio.sleep(delay)
        latency_ms = (
            attempts[-1].duration_ms if attempts else (time.perf_counter() - started) * 1000
        )
        return self._result(cell, case, state, error, attempts, latency_ms, tokens, cost)

    async def _invoke(self, graph: Any, sync: bool, inputs: dict[str, Any]) -> Any:
        if not sync:
            return await graph.ainvoke(inputs)
        # One thread hop per cell rather than one per node: sync graphs run whole in a worker.
        # The worker runs in a copy of this task's context, so report_usage reaches the meter.
        context = contextvars.copy_context()
        future = self._pool.submit(context.run, _invoke_sync, graph, inputs)
        return await asyncio.wrap_future(future)

    def _result(
        self,
        cell: Cell,
        case: Any,
        state: Any,
        error: BaseException | None,
        attempts: list[Attempt],
        latency_ms: float,
        tokens: int | None,
        cost: float | None,
    ) -> CellResult:
        ok = error is None
        last = attempts[-1]
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
