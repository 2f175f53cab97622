"""The Ray runner: cells run on long-lived Ray actors; results come back to this process.

The driver (this process) keeps at most `concurrency` cells in flight, spread over the
actors by free slots, and pulls the next cell from the plan only when a slot frees up: the
batch is never submitted at once. Results and their audit events return to the driver,
which records them in batches (one writer, one connection pool, however many actors).

A worker that is lost under a cell (its actor died, its node went away, its result object
was lost) is not the cell's fault: the attempt is recorded as transient with error type
`WorkerLost`, the actor is replaced, and the cell is retried with backoff on a live actor,
up to `MAX_WORKER_LOSSES` times. A cell the actor itself cannot bring back within its
timeout budget (say, a sync node holding the actor's event loop) has its actor stopped and
is recorded as timed out.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from wtb import events
from wtb.errors import ClusterError
from wtb.events import EventBus
from wtb.executor import CellExecutor, RetryLater
from wtb.job import BatchJob
from wtb.results import WORKER_LOST, WORKER_STOPPED, Attempt, AttemptStatus, Cell, CellResult
from wtb.retry import RetryPolicy
from wtb.runners.ray_actor import CONTROL_GROUP, AttemptOutcome, CellActor

MAX_WORKER_LOSSES: Final = 3
"""A cell whose worker is lost this many times is recorded as failed (a cell that reliably
kills its worker, by running out of memory say, must not loop forever)."""

_START_TIMEOUT_S: Final = 300.0
"""How long actors may take to start (worker process, imports, graph builds)."""
_GRACE_S: Final = 5.0
"""Slack (plus one more timeout) on a cell's time budget before the driver stops the
actor that holds it."""
_TICK_S: Final = 1.0


@dataclass
class _Worker:
    index: int
    handle: Any
    slots: int
    busy: int = 0
    alive: bool = True


@dataclass
class _Flight:
    cell: Cell
    attempts: tuple[Attempt, ...]
    worker: _Worker
    at: datetime
    t0: float
    deadline: float


class RayRunner:
    """Runs cells on Ray actors of the cluster this process is connected to
    (`wtb.runners.ray_session.ray_connection`)."""

    name = "ray"

    def __init__(
        self,
        concurrency: int | None = None,
        *,
        actors: int | None = None,
        backoff_scale: float = 1.0,
    ) -> None:
        self._concurrency = concurrency
        self._actors = actors
        self._backoff_scale = backoff_scale

    def run(self, job: BatchJob, cells: Iterable[Cell], bus: EventBus) -> Iterator[CellResult]:
        concurrency = self._concurrency or job.batch.concurrency
        dispatcher = _Dispatcher(job, concurrency, self._actors, self._backoff_scale, bus)
        try:
            yield from dispatcher.results(iter(cells))
        finally:
            dispatcher.stop()


def cluster_cpus() -> float:
    """CPUs of the Ray cluster this process is connected to."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return float(resources.get("CPU", 1.0))


def default_actor_count(concurrency: int) -> int:
    """One actor per CPU of the cluster, and never more actors than cells in flight."""
    return max(1, min(concurrency, int(cluster_cpus())))


class _Dispatcher:
    def __init__(
        self,
        job: BatchJob,
        concurrency: int,
        actors: int | None,
        backoff_scale: float,
        bus: EventBus,
    ) -> None:
        import ray

        self._ray = ray
        self._lost_errors: tuple[type[BaseException], ...] = (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.OutOfMemoryError,
        )
        self._job = job
        self._bus = bus
        self._concurrency = concurrency
        self._backoff_scale = backoff_scale
        self._policy = RetryPolicy.from_spec(job.batch.retry, scale=backoff_scale)
        self._timeout = job.batch.timeout_seconds
        count = min(actors or default_actor_count(concurrency), concurrency)
        slots = math.ceil(concurrency / count)
        cpus = cluster_cpus()
        remote: Any = ray.remote  # its stubs lack the actor options used here
        self._actor_class = remote(
            max_concurrency=slots,
            num_cpus=min(1.0, cpus / count),
            max_restarts=0,
            max_task_retries=0,
            concurrency_groups={CONTROL_GROUP: 1},
        )(CellActor)
        self._job_ref = ray.put(job)
        self._flights: dict[Any, _Flight] = {}
        self._retries: list[tuple[float, int, Cell, tuple[Attempt, ...]]] = []
        self._sequence = itertools.count()
        self._local: CellExecutor | None = None
        self._workers: list[_Worker] = []
        self._workers = [self._spawn(i, slots) for i in range(count)]
        try:
            self._await_ready(self._workers)
        except BaseException:
            self.stop()
            raise

    # -- actors --------------------------------------------------------------------------

    def _spawn(self, index: int, slots: int) -> _Worker:
        handle = self._actor_class.remote(self._job_ref, slots, self._backoff_scale)
        return _Worker(index, handle, slots)

    def _await_ready(self, workers: list[_Worker]) -> None:
        try:
            answers = self._ray.get(
                [w.handle.ready.remote() for w in workers], timeout=_START_TIMEOUT_S
            )
        except self._ray.exceptions.GetTimeoutError as exc:
            raise ClusterError(
                f"WTB's Ray actors did not start within {_START_TIMEOUT_S:g} s: the cluster "
                "may lack free CPU or memory for them"
            ) from exc
        except self._ray.exceptions.RayError as exc:
            raise ClusterError(f"WTB's Ray actors could not start: {exc}") from exc
        for _, problem in answers:
            if problem is not None:
                raise ClusterError(
                    f"WTB's Ray actors cannot run the batch: {problem}\n  (on a cluster, the "
                    "workflow's code must be installed in the workers' image or on PYTHONPATH)"
                )

    def _retire(self, worker: _Worker) -> None:
        """Stop a worker (if not yet done) and put a fresh actor in its place."""
        if not worker.alive:
            return
        worker.alive = False
        self._ray.kill(worker.handle, no_restart=True)
        fresh = self._spawn(worker.index, worker.slots)
        self._await_ready([fresh])
        self._workers[worker.index] = fresh

    def stop(self) -> None:
        for worker in self._workers:
            if worker.alive:
                worker.alive = False
                self._ray.kill(worker.handle, no_restart=True)
        self._flights.clear()

    # -- the loop ------------------------------------------------------------------------

    def results(self, source: Iterator[Cell]) -> Iterator[CellResult]:
        exhausted = False
        while True:
            exhausted = self._submit_more(source, exhausted)
            if not self._flights:
                if not self._retries:
                    if exhausted:
                        return
                    continue
                time.sleep(max(0.0, self._retries[0][0] - time.monotonic()))
                continue
            refs = list(self._flights)
            ready, _ = self._ray.wait(refs, num_returns=1, timeout=self._wait_seconds())
            if ready:
                ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
            yield from self._collect_all(ready)
            yield from self._enforce_deadlines()

    def _wait_seconds(self) -> float:
        """How long to wait for a result: until a retry is due, if a slot is free for it."""
        wait = _TICK_S
        if self._retries and len(self._flights) < self._concurrency:
            wait = min(wait, max(0.0, self._retries[0][0] - time.monotonic()))
        return wait

    def _submit_more(self, source: Iterator[Cell], exhausted: bool) -> bool:
        """Fill free slots: due retries first, then new cells. Returns whether `source`
        is exhausted."""
        while len(self._flights) < self._concurrency:
            if self._retries and self._retries[0][0] <= time.monotonic():
                _, _, cell, attempts = heapq.heappop(self._retries)
            elif exhausted:
                return True
            else:
                next_cell = next(source, None)
                if next_cell is None:
                    return True
                cell, attempts = next_cell, ()
            self._submit(cell, attempts)
        return exhausted

    def _submit(self, cell: Cell, attempts: tuple[Attempt, ...]) -> None:
        worker = max(self._workers, key=lambda w: w.slots - w.busy)
        worker.busy += 1
        ref = worker.handle.run.remote(cell, attempts)
        now = time.monotonic()
        self._flights[ref] = _Flight(
            cell, attempts, worker, datetime.now(UTC), now, now + self._budget
        )

    @property
    def _budget(self) -> float:
        """Seconds an actor may take for one call: an attempt (bounded by the timeout,
        which the actor enforces) and the cell's evaluation, with room to spare."""
        return 2 * self._timeout + _GRACE_S

    def _settle(self, ref: Any) -> _Flight:
        flight = self._flights.pop(ref)
        flight.worker.busy -= 1
        return flight

    def _collect_all(self, ready: list[Any]) -> Iterator[CellResult]:
        for ref in ready:
            if ref in self._flights:  # not settled meanwhile by a stopped actor
                result = self._collect(ref)
                if result is not None:
                    yield result

    def _collect(self, ref: Any) -> CellResult | None:
        flight = self._settle(ref)
        try:
            outcome: AttemptOutcome = self._ray.get(ref)
        except self._lost_errors as exc:
            self._retire(flight.worker)
            return self._after_loss(flight, exc)
        step, cell_events = outcome
        for event in cell_events:
            self._bus.publish(event)
        if isinstance(step, RetryLater):
            self._retry_later(flight.cell, step.attempts, step.delay)
            return None
        return step

    def _enforce_deadlines(self) -> Iterator[CellResult]:
        """Stop actors that hold a call past its budget.

        An actor enforces each attempt's timeout itself; it misses one only when a cell
        blocks its event loop (a blocking call in an async node or evaluator). The actor
        names that cell from its control thread: the cell is recorded as timed out, the
        actor is stopped, and its other cells run again elsewhere, their budgets intact.
        """
        now = time.monotonic()
        overdue = [r for r, f in self._flights.items() if f.deadline <= now and f.worker.alive]
        if not overdue:
            return
        # Results that arrived while the driver was busy elsewhere are not late.
        ready, _ = self._ray.wait(overdue, num_returns=len(overdue), timeout=0)
        yield from self._collect_all(ready)
        late = [ref for ref in overdue if ref in self._flights]
        for worker in {id(self._flights[r].worker): self._flights[r].worker for r in late}.values():
            on_worker = [r for r, f in self._flights.items() if f.worker is worker]
            culprit = self._blocking_cell(worker)
            timed_out = [r for r in on_worker if self._flights[r].cell.key == culprit] or [
                r for r in late if self._flights[r].worker is worker
            ]
            for ref in on_worker:
                flight = self._settle(ref)
                if ref in timed_out:
                    message = (
                        f"no result from the worker within {now - flight.t0:.0f} s "
                        f"(timeout {self._timeout:g} s per attempt); the worker was stopped"
                    )
                    result = self._failed_attempt(flight, "timeout", "Timeout", message)
                    if result is not None:
                        yield result
                else:
                    self._failed_attempt(
                        flight,
                        "transient",
                        WORKER_STOPPED,
                        "the worker was stopped because another cell blocked it",
                    )
            self._retire(worker)

    def _blocking_cell(self, worker: _Worker) -> str | None:
        """The key of the cell blocking the worker's event loop; None when none is (or the
        worker cannot say)."""
        call = worker.handle.blocking_cell.options(concurrency_group=CONTROL_GROUP)
        try:
            key: str | None = self._ray.get(call.remote(), timeout=_TICK_S * 10)
        except self._ray.exceptions.RayError:
            return None
        return key

    # -- failed attempts seen by the driver -------------------------------------------------

    def _after_loss(self, flight: _Flight, exc: BaseException) -> CellResult | None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        message = f"worker lost ({type(exc).__name__}){': ' + reason if reason else ''}"
        return self._failed_attempt(flight, "transient", WORKER_LOST, message[:2000])

    def _failed_attempt(
        self, flight: _Flight, status: AttemptStatus, error_type: str, message: str
    ) -> CellResult | None:
        """Record an attempt that ended on the driver's side; the cell's result when it is
        over, else None (it is scheduled again)."""
        cell = flight.cell
        number = len(flight.attempts) + 1
        attempt = Attempt(
            number, status, flight.at, (time.monotonic() - flight.t0) * 1000, error_type, message
        )
        attempts = (*flight.attempts, attempt)
        self._bus.publish(
            events.Event(
                events.CELL_ATTEMPT_FAILED,
                cell.key,
                {"attempt": number, "status": status, "error": error_type, "message": message},
            )
        )
        losses = sum(1 for a in attempts if a.error_type == WORKER_LOST)
        delay: float | None
        if error_type == WORKER_LOST:
            delay = None if losses >= MAX_WORKER_LOSSES else self._policy.delay(losses)
        elif error_type == WORKER_STOPPED:
            delay = 0.0
        else:
            delay = self._policy.next_delay(attempts)
        if delay is None:
            return self._failure(cell, attempts)
        self._bus.publish(
            events.Event(
                events.CELL_ATTEMPT_RETRIED, cell.key, {"attempt": number + 1, "delay_s": delay}
            )
        )
        self._retry_later(cell, attempts, delay)
        return None

    def _retry_later(self, cell: Cell, attempts: tuple[Attempt, ...], delay: float) -> None:
        heapq.heappush(
            self._retries, (time.monotonic() + delay, next(self._sequence), cell, attempts)
        )

    def _failure(self, cell: Cell, attempts: tuple[Attempt, ...]) -> CellResult:
        """The failed cell's result, evaluated here (evaluators score failures too)."""
        if self._local is None:
            self._local = CellExecutor(
                self._job, emit=self._bus.publish, backoff_scale=self._backoff_scale
            )
        return self._local.failure(cell, list(attempts))
