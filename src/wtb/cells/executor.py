"""Run one cell: invoke the combination's graph on the case, attempt after attempt, and score it.

Every runner (inline threads, the inline asyncio loop, Ray actors) executes cells through
this class, so attempts, timeouts, usage and evaluation behave the same wherever a cell
runs. The attempt protocol (`wtb.cells.attempts`) numbers attempts, sends their events and
decides on retries; scoring is `wtb.cells.scoring`; what is left here are the two small
drivers: `attempt` on an event loop, `run_sync` on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from wtb.cells.attempts import AttemptProtocol, CellAttempt, Decision, EmitEvent, GiveUp, Retry
from wtb.cells.graph_run import GraphOutcome, invoke_async, invoke_sync
from wtb.cells.invocation import Invocation, Invocations
from wtb.cells.nodes import NodeTimer
from wtb.cells.retry import RetryPolicy
from wtb.cells.scoring import Scorer
from wtb.cells.threads import ElasticThreadPool
from wtb.domain import Attempt, Case, Cell, CellResult, Combination
from wtb.graphs import VariantGraphs
from wtb.importing import extend_sys_path
from wtb.runs.spec import RunSpec
from wtb.runtime.attempt import GraphRuntime
from wtb.usage import metering

T = TypeVar("T")


class Claim(Protocol):
    def release(self) -> bool:
        """End the watch: True when the attempt is still ours, False when it was taken over."""
        ...


class AttemptGuard(Protocol):
    """Watches the deadline of attempts that run in a thread which cannot be interrupted;
    at the deadline it ends the attempt as timed out and carries the cell on elsewhere."""

    def watch(self, attempt: CellAttempt) -> Claim: ...


def _invoke_sync(
    graph: Any, case: Case, invocation: Invocation, attempt: CellAttempt
) -> GraphOutcome:
    attempt.graph_starts()  # in the thread that runs it: a queue before is not latency
    return invoke_sync(graph, case.inputs, case.resume, invocation)


async def _in_pool(pool: ElasticThreadPool, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.wrap_future(pool.submit(fn, *args))


class CellExecutor:
    """Executes cells of one run; builds each combination's graph once per process, whose
    node objects then serve all its cells concurrently (`isolation: shared`), or a graph
    for every cell attempt (`isolation: cell`)."""

    def __init__(self, job: RunSpec, *, emit: EmitEvent, backoff_scale: float = 1.0) -> None:
        extend_sys_path(job.python_path)
        self._invocations = Invocations(job)
        # Resuming an interrupt needs a checkpointer thread: with scripted answers in the
        # data set, every graph gets WTB's saver.
        self._graphs = VariantGraphs(
            job.workflow, saver=any(case.resume is not None for case in job.cases)
        )
        # A fresh graph (factories run again, compiled again) for every cell attempt.
        self._isolated = job.batch.isolation == "cell"
        # Nodes fixed outside the matrix are in no combination (nor its label or cell keys),
        # but in every graph built.
        self._fixed: Combination = tuple(sorted((job.batch.fixed or {}).items()))
        self.scorer = Scorer(job)
        self.protocol = AttemptProtocol(
            RetryPolicy.from_spec(job.batch.retry, scale=backoff_scale),
            emit,
            job.batch.timeout_seconds,
        )
        self.live: dict[str, CellAttempt] = {}
        """The attempts in progress on the event loop, by cell key: a runner whose loop a
        cell blocked ends them from outside (`wtb.runners.inline`)."""

    def _graph(self, combination: Combination) -> tuple[Any, GraphRuntime]:
        """The graph an attempt of the combination runs, and its runtime: the process's one
        (`isolation: shared`), or one built for this attempt alone (`isolation: cell`)."""
        built = self._built(combination)
        if self._isolated:
            return self._graphs.fresh(built)
        return self._graphs.get(built)[0], self._graphs.runtime(built)

    def is_sync(self, combination: Combination) -> bool:
        """Whether the combination's graph is sync-only (it can run whole in one thread)."""
        return self._graphs.get(self._built(combination))[1]

    def _built(self, combination: Combination) -> Combination:
        """What a combination's graph is built from: the combination and the fixed nodes."""
        if self._fixed:
            return tuple(sorted((*combination, *self._fixed)))
        return combination

    def _invocation(
        self, attempt: CellAttempt, case: Case, runtime: GraphRuntime, timer: NodeTimer
    ) -> Invocation:
        """What the attempt's graph is invoked with: its config (a checkpointer thread when
        the graph has a saver, the root run id, the node timer) and context."""
        return self._invocations.build(
            attempt.cell,
            case,
            attempt.number,
            needs_thread=runtime.needs_thread,
            run_id=attempt.root_run_id,
            callbacks=[timer],
        )

    # -- asyncio -------------------------------------------------------------------------

    async def run(self, cell: Cell, pool: ElasticThreadPool) -> CellResult:
        """Run a cell on the event loop, attempts and their backoff included: async graphs
        directly, sync ones in `pool` (which must also be the loop's default executor,
        where LangGraph runs sync nodes)."""
        history: tuple[Attempt, ...] = ()
        while True:
            step = await self.attempt(cell, pool, history)
            if isinstance(step, CellResult):
                return step
            await asyncio.sleep(step.delay)
            history = step.attempts

    async def attempt(
        self, cell: Cell, pool: ElasticThreadPool, history: Sequence[Attempt] = ()
    ) -> CellResult | Retry:
        """Make the cell's next attempt after `history`: the cell's result when it is over,
        or when to try again.

        The Ray runner calls this, one attempt per call, so that the driver holds every
        attempt's record and the backoff does not hold a worker's slot.
        """
        case = self.scorer.case(cell)
        sync = self.is_sync(cell.combination)
        attempt = self.protocol.begin(cell, history)
        self.live[cell.key] = attempt
        try:
            return await self._attempt(cell, pool, case, sync, attempt)
        finally:
            if self.live.get(cell.key) is attempt:
                del self.live[cell.key]

    async def _attempt(
        self, cell: Cell, pool: ElasticThreadPool, case: Case, sync: bool, attempt: CellAttempt
    ) -> CellResult | Retry:
        timer = attempt.nodes = NodeTimer()
        deadline = asyncio.timeout(self.protocol.timeout)
        try:
            with pool.tracking() as submitted:
                async with deadline:
                    graph, runtime = await self._attempt_graph(pool, cell.combination)
                    invocation = self._invocation(attempt, case, runtime, timer)
                    with metering() as meter, runtime.attempt(invocation.config):
                        outcome = await self._invoke(pool, graph, sync, case, invocation, attempt)
        except TimeoutError as exc:
            # Ours when the deadline expired; otherwise the graph raised it (transient).
            if deadline.expired():
                # Threads still running this attempt's sync code are stuck: replace them.
                pool.abandon(submitted)
                decision = attempt.timed_out()
            else:
                decision = attempt.raised(exc)
        except asyncio.CancelledError:
            raise  # the run is stopping: WTB's own, not the cell's
        except BaseException as exc:  # SystemExit and the like too: the cell's failure
            decision = attempt.raised(exc)
        else:
            attempts = attempt.succeeded(interrupted=bool(outcome.interrupts))
            # Scoring runs user evaluators, which may block (an HTTP call to a judge):
            # never on the loop, where it would stall every other cell.
            return await _in_pool(
                pool, self.scorer.success, cell, outcome, attempts, meter, timer.figures()
            )
        if isinstance(decision, Retry):
            return decision
        return await _in_pool(pool, self.scorer.failure, cell, decision.attempts, timer.figures())

    async def _attempt_graph(
        self, pool: ElasticThreadPool, combination: Combination
    ) -> tuple[Any, GraphRuntime]:
        """The attempt's graph. One built for the attempt (`isolation: cell`) is built in
        `pool`, off the loop (user factories may block), and within the attempt: its time
        counts towards the timeout, and a factory that raises fails the attempt."""
        if not self._isolated:
            return self._graph(combination)
        return await _in_pool(pool, self._graph, combination)

    async def _invoke(
        self,
        pool: ElasticThreadPool,
        graph: Any,
        sync: bool,
        case: Case,
        invocation: Invocation,
        attempt: CellAttempt,
    ) -> GraphOutcome:
        if not sync:
            attempt.graph_starts()
            return await invoke_async(graph, case.inputs, case.resume, invocation)
        # One thread hop per cell rather than one per node: sync graphs run whole in a worker.
        # The worker runs in a copy of this task's context, so report_usage reaches the meter
        # and the graph's store and cache reach the attempt's (wtb.runtime.attempt).
        # The attempt's clock starts when a worker picks the call up (`_invoke_sync`): the
        # pool is shared with scoring and result hand-off, and waiting there is not latency.
        context = contextvars.copy_context()
        future = pool.submit(context.run, _invoke_sync, graph, case, invocation, attempt)
        return await asyncio.wrap_future(future)

    # -- threads -------------------------------------------------------------------------

    def run_sync(
        self,
        cell: Cell,
        guard: AttemptGuard,
        after: Decision | None = None,
        *,
        keep_going: Callable[[], bool] = lambda: True,
    ) -> CellResult | None:
        """Run a cell of a sync-only graph in this thread, to its result.

        `after` is the decision on an attempt that ended elsewhere (its guard timed it out):
        the cell goes on from there. `guard` watches each attempt's deadline; when an
        attempt overruns, the guard takes the cell over and this returns None once the graph
        finally returns: the caller's thread is then written off. When `keep_going()` turns
        false (the run was stopped), no further attempt starts.
        """
        case = self.scorer.case(cell)
        history: tuple[Attempt, ...] = ()
        if after is not None:
            if isinstance(after, GiveUp) or not keep_going():
                return self.scorer.failure(cell, after.attempts)
            time.sleep(after.delay)
            history = after.attempts
        while True:
            attempt = self.protocol.begin(cell, history)
            timer = attempt.nodes = NodeTimer()  # the watchdog's timeout asks it too
            claim = guard.watch(attempt)
            error: BaseException | None = None
            try:
                graph, runtime = self._graph(cell.combination)
                invocation = self._invocation(attempt, case, runtime, timer)
                with metering() as meter, runtime.attempt(invocation.config):
                    outcome = _invoke_sync(graph, case, invocation, attempt)
            except BaseException as exc:  # SystemExit and the like too: the cell's failure
                error = exc
            if not claim.release():
                return None
            if error is None:
                attempts = attempt.succeeded(interrupted=bool(outcome.interrupts))
                return self.scorer.success(cell, outcome, attempts, meter, timer.figures())
            decision = attempt.raised(error)
            if isinstance(decision, GiveUp) or not keep_going():
                return self.scorer.failure(cell, decision.attempts, timer.figures())
            time.sleep(decision.delay)
            history = decision.attempts
