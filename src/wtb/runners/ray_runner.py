"""The Ray runner: cells run on long-lived Ray actors; results come back to this process.

The driver (this process) sends cells to the actors in chunks, at most two chunks per
actor at a time, and takes cells from the plan only as chunks come back: the batch is never
submitted at once. Each actor runs at most its share of `concurrency` cells at once. A
chunk holds about 50 ms of work, sized from the cells' measured durations (1 cell when
cells are slow, up to 64 when they take a millisecond), so that Ray's cost per call is
shared when cells are quick. Results and their audit events return to the driver, which
records them in batches (one writer, one connection pool, however many actors).

A worker that is lost under a cell (its actor died, its node went away, its result object
was lost) is not the cell's fault: the attempt is recorded as transient with error type
`WorkerLost`, the actor is replaced, and the cell is retried with backoff on a live actor,
up to `MAX_WORKER_LOSSES` times. A cell that blocks its actor's event loop, so that the
actor cannot enforce its timeout, is found and recorded as timed out, and its actor
replaced.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from wtb.cells.attempts import AttemptProtocol, GiveUp, Retry
from wtb.cells.retry import RetryPolicy
from wtb.cells.scoring import Scorer
from wtb.domain import WORKER_LOST, WORKER_STOPPED, Attempt, Cell, CellResult
from wtb.errors import ClusterError
from wtb.events import EventBus
from wtb.runners.ray_actor import CONTROL_GROUP, AttemptOutcome, CellActor, CellAttempt
from wtb.runs.spec import RunSpec

MAX_WORKER_LOSSES: Final = 3
"""A cell whose worker is lost this many times is recorded as failed (a cell that reliably
kills its worker, by running out of memory say, must not loop forever)."""

MAX_CHUNK: Final = 64
"""Most cells sent to an actor in one call."""
_CHUNK_SECONDS: Final = 0.05
"""Work aimed for per chunk: Ray's per-call cost is shared, progress stays fine-grained."""
_CHUNKS_PER_ACTOR: Final = 2
"""Chunks outstanding per actor: one running while the next is on its way."""
_START_TIMEOUT_S: Final = 300.0
"""How long actors may take to start (worker process, imports, graph builds)."""
_GRACE_S: Final = 5.0
"""Slack (plus one more timeout) on a call's time budget before the driver asks the actor
whether a cell blocks it."""
_ASK_TIMEOUT_S: Final = 10.0
_MAX_EXTENSIONS: Final = 3
"""Deadline checks in a row that may find a busy actor without progress before it is
replaced anyway."""
_TICK_S: Final = 1.0


@dataclass
class _Worker:
    index: int
    handle: Any
    slots: int
    chunks: int = 0
    alive: bool = True
    isolating: bool = False
    """Running one suspect cell alone: it takes nothing else until that cell is back."""
    finished: int = 0
    """Attempts the actor had finished when last asked (progress tells busy from stuck)."""
    starting: Any = None
    """For a replacement not started yet: its `ready` call. It takes no work until then."""
    since: float = 0.0


@dataclass
class _Flight:
    """One call: a chunk of cells on one worker."""

    chunk: list[CellAttempt]
    worker: _Worker
    at: datetime
    t0: float
    deadline: float
    isolated: bool = False


_Retry = tuple[float, int, Cell, tuple[Attempt, ...]]


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

    def run(self, job: RunSpec, cells: Iterable[Cell], bus: EventBus) -> Iterator[CellResult]:
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


def _check_ready(answer: tuple[int, str | None]) -> None:
    _, problem = answer
    if problem is not None:
        raise ClusterError(
            f"WTB's Ray actors cannot run the batch: {problem}\n  (on a cluster, the "
            "workflow's code must be installed in the workers' image or on PYTHONPATH)"
        )


def default_actor_count(concurrency: int) -> int:
    """One actor per CPU of the cluster, and never more actors than cells in flight."""
    return max(1, min(concurrency, int(cluster_cpus())))


class _Dispatcher:
    def __init__(
        self,
        job: RunSpec,
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
        self._backoff_scale = backoff_scale
        self._protocol = AttemptProtocol(
            RetryPolicy.from_spec(job.batch.retry, scale=backoff_scale),
            bus.publish,
            job.batch.timeout_seconds,
        )
        self._timeout = job.batch.timeout_seconds
        self._budget = 2 * self._timeout + _GRACE_S
        self._cell_seconds: float | None = None
        count = min(actors or default_actor_count(concurrency), concurrency)
        # The concurrency shared out exactly: actor i runs at most slots[i] cells at once.
        slots = [concurrency // count + (1 if i < concurrency % count else 0) for i in range(count)]
        remote: Any = ray.remote  # its stubs lack the actor options used here
        self._actor_class = remote(
            num_cpus=min(1.0, cluster_cpus() / count),
            max_restarts=0,
            max_task_retries=0,
            concurrency_groups={CONTROL_GROUP: 1},
        )(CellActor)
        self._job_ref = ray.put(job)
        self._flights: dict[Any, _Flight] = {}
        self._retries: list[_Retry] = []
        self._suspects: list[_Retry] = []
        """Cells that were on a worker when it was lost: each runs alone on an idle worker
        next, so that only a loss it suffers alone counts against it."""
        self._losses_alone: dict[str, int] = {}
        self._reserved: _Worker | None = None
        """The worker left to drain for a due suspect, if any."""
        self._stalls: dict[int, int] = {}
        """Per worker (by id), deadline checks in a row that found it without progress."""
        self._sequence = itertools.count()
        self._scorer: Scorer | None = None
        self._workers: list[_Worker] = []
        self._workers = [self._spawn(i, n) for i, n in enumerate(slots)]
        try:
            self._await_ready(self._workers)
        except BaseException:
            self.stop()
            raise

    # -- actors --------------------------------------------------------------------------

    def _spawn(self, index: int, slots: int) -> _Worker:
        handle = self._actor_class.options(max_concurrency=_CHUNKS_PER_ACTOR + 1).remote(
            self._job_ref, slots, self._backoff_scale
        )
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
        for answer in answers:
            _check_ready(answer)

    def _retire(self, worker: _Worker) -> None:
        """Stop a worker (if not yet done) and ask for a fresh actor in its place. The run
        goes on with the others meanwhile: after a node is lost, the replacement may have
        to wait for room on the cluster."""
        if not worker.alive:
            return
        worker.alive = False
        self._ray.kill(worker.handle, no_restart=True)
        fresh = self._spawn(worker.index, worker.slots)
        fresh.starting = fresh.handle.ready.remote()
        fresh.since = time.monotonic()
        self._workers[worker.index] = fresh

    def _starting(self) -> list[Any]:
        return [w.starting for w in self._workers if w.starting is not None]

    def _check_started(self, ready: list[Any]) -> None:
        """Put replacements that answered to work; fail when none can ever run cells."""
        arrived = set(ready)
        for worker in self._workers:
            if worker.starting is None:
                continue
            if worker.starting in arrived:
                try:
                    answer = self._ray.get(worker.starting)
                except self._ray.exceptions.RayError as exc:
                    raise ClusterError(f"a replacement Ray actor could not start: {exc}") from exc
                _check_ready(answer)
                worker.starting = None
            elif time.monotonic() - worker.since > _START_TIMEOUT_S and all(
                w.starting is not None for w in self._workers
            ):
                raise ClusterError(
                    f"no Ray actor of WTB's could be started for {_START_TIMEOUT_S:g} s after "
                    "workers were lost: the cluster may lack free CPU or memory for them"
                )

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
            due = self._next_due()
            if exhausted and not self._flights and due is None:
                return  # replacements still starting are not waited for: nothing is left
            refs = [*self._flights, *self._starting()]
            if not refs:
                if due is not None:
                    time.sleep(max(0.0, due - time.monotonic()))
                continue
            ready, _ = self._ray.wait(refs, num_returns=1, timeout=self._wait_seconds())
            if ready:
                ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
            self._check_started(ready)
            yield from self._collect_all(ready)
            yield from self._enforce_deadlines()

    def _next_due(self) -> float | None:
        heads = [queue[0][0] for queue in (self._retries, self._suspects) if queue]
        return min(heads) if heads else None

    def _free_worker(self, reserved: _Worker | None = None) -> _Worker | None:
        """The worker with the fewest chunks out, if it can take one more."""
        open_workers = [
            w for w in self._workers if not w.isolating and w.starting is None and w is not reserved
        ]
        worker = min(open_workers, key=lambda w: w.chunks, default=None)
        return worker if worker is not None and worker.chunks < _CHUNKS_PER_ACTOR else None

    def _idle_worker(self) -> _Worker | None:
        return next(
            (w for w in self._workers if w.chunks == 0 and not w.isolating and w.starting is None),
            None,
        )

    def _wait_seconds(self) -> float:
        """How long to wait for a result: until a retry is due, if a worker can take it
        (a worker held back for a suspect cannot)."""
        due = self._next_due()
        if due is None or self._free_worker(self._reserved) is None:
            return _TICK_S
        return min(_TICK_S, max(0.0, due - time.monotonic()))

    def _chunk_size(self, worker: _Worker) -> int:
        if self._cell_seconds is None:
            return worker.slots
        size = round(_CHUNK_SECONDS * worker.slots / max(self._cell_seconds, 1e-6))
        return max(1, min(MAX_CHUNK, size))

    def _submit_more(self, source: Iterator[Cell], exhausted: bool) -> bool:
        """Send work to workers with room: suspects alone to idle workers, then chunks of
        due retries and new cells. Returns whether `source` is exhausted."""
        now = time.monotonic()
        reserved: _Worker | None = None
        self._reserved = None
        while self._suspects and self._suspects[0][0] <= now:
            worker = self._idle_worker()
            if worker is None:
                # Let the least busy worker drain, so that the suspect gets it soon.
                reserved = self._reserved = min(
                    self._workers, key=lambda w: (w.starting is not None, w.isolating, w.chunks)
                )
                break
            _, _, cell, attempts = heapq.heappop(self._suspects)
            worker.isolating = True
            self._send(worker, [(cell, attempts)], isolated=True)
        while (worker := self._free_worker(reserved)) is not None:
            size = self._chunk_size(worker)
            chunk: list[CellAttempt] = []
            while len(chunk) < size and self._retries and self._retries[0][0] <= now:
                _, _, cell, attempts = heapq.heappop(self._retries)
                chunk.append((cell, attempts))
            while len(chunk) < size and not exhausted:
                next_cell = next(source, None)
                if next_cell is None:
                    exhausted = True
                else:
                    chunk.append((next_cell, ()))
            if not chunk:
                return exhausted
            self._send(worker, chunk)
        return exhausted

    def _send(self, worker: _Worker, chunk: list[CellAttempt], *, isolated: bool = False) -> None:
        worker.chunks += 1
        ref = worker.handle.run.remote(chunk)
        t0 = time.perf_counter()
        self._flights[ref] = _Flight(
            chunk, worker, datetime.now(UTC), t0, t0 + self._budget, isolated
        )

    def _settle(self, ref: Any) -> _Flight:
        flight = self._flights.pop(ref)
        flight.worker.chunks -= 1
        if flight.isolated:
            flight.worker.isolating = False
        return flight

    def _collect_all(self, ready: list[Any]) -> Iterator[CellResult]:
        for ref in ready:
            if ref in self._flights:  # not settled meanwhile with a stopped actor
                yield from self._collect(ref)

    def _collect(self, ref: Any) -> Iterator[CellResult]:
        flight = self._settle(ref)
        try:
            outcomes: list[AttemptOutcome] = self._ray.get(ref)
        except self._lost_errors as exc:
            self._retire(flight.worker)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = f"worker lost ({type(exc).__name__}){': ' + reason if reason else ''}"
            for cell, attempts in flight.chunk:
                yield from self._failed(cell, attempts, flight, WORKER_LOST, message[:2000])
            return
        for (cell, _), (step, cell_events) in zip(flight.chunk, outcomes, strict=True):
            for event in cell_events:
                self._bus.publish(event)
            self._observe(step.attempts[-1].duration_ms / 1000)
            if isinstance(step, Retry):
                self._retry_later(cell, step.attempts, step.delay)
            else:
                yield step

    def _observe(self, seconds: float) -> None:
        """Track how long a cell's attempt takes (moving average), to size chunks."""
        previous = self._cell_seconds
        self._cell_seconds = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def _enforce_deadlines(self) -> Iterator[CellResult]:
        """Deal with calls past their budget.

        An actor enforces each attempt's timeout itself; it misses one only when a cell
        blocks its event loop (a blocking call in an async node or evaluator). Asked on its
        control thread, the actor names that cell: the cell is recorded as timed out, the
        actor replaced, and its other cells run again at no cost to their budgets. An actor
        that is merely busy gets more time; one that cannot answer at all is replaced and
        its cells count as lost.
        """
        now = time.perf_counter()  # the clock of flights' start times and deadlines
        overdue = [r for r, f in self._flights.items() if f.deadline <= now and f.worker.alive]
        if not overdue:
            return
        # Results that arrived while the driver was busy elsewhere are not late.
        ready, _ = self._ray.wait(overdue, num_returns=len(overdue), timeout=0)
        yield from self._collect_all(ready)
        late: dict[int, tuple[_Worker, list[_Flight]]] = {}
        for ref in overdue:
            flight = self._flights.get(ref)
            if flight is not None and flight.worker.alive:
                late.setdefault(id(flight.worker), (flight.worker, []))[1].append(flight)
        for worker, flights in late.values():
            if not worker.alive:  # stopped meanwhile, with its flights
                continue
            answered, culprit, finished = self._ask_blocking_cell(worker)
            unresponsive = "the worker stopped answering; it was stopped"
            if answered and culprit is None:
                # Busy, not blocked. Progress since the last check earns more time; none,
                # check after check, means a cell ignores cancellation.
                stalls = 0 if finished > worker.finished else self._stalls.get(id(worker), 0) + 1
                worker.finished = finished
                self._stalls[id(worker)] = stalls
                if stalls < _MAX_EXTENSIONS:
                    for flight in flights:
                        flight.deadline = now + self._budget
                    continue
                answered = False
                unresponsive = "no result long after the timeout (a cell may ignore "
                unresponsive += "cancellation); the worker was stopped"
            for ref in [r for r, f in self._flights.items() if f.worker is worker]:
                flight = self._settle(ref)
                for cell, attempts in flight.chunk:
                    if not answered:
                        error, message = WORKER_LOST, unresponsive
                    elif cell.key == culprit:
                        error = "Timeout"
                        message = (
                            f"the cell blocked its worker for over {now - flight.t0:.0f} s "
                            f"(timeout {self._timeout:g} s per attempt); the worker was stopped"
                        )
                    else:
                        error = WORKER_STOPPED
                        message = "the worker was stopped because another cell blocked it"
                    yield from self._failed(cell, attempts, flight, error, message)
            self._stalls.pop(id(worker), None)
            self._retire(worker)

    def _ask_blocking_cell(self, worker: _Worker) -> tuple[bool, str | None, int]:
        """(whether the worker answered, the key of the cell blocking its event loop,
        how many attempts it has finished)."""
        call = worker.handle.blocking_cell.options(concurrency_group=CONTROL_GROUP)
        try:
            key, finished = self._ray.get(call.remote(), timeout=_ASK_TIMEOUT_S)
        except self._ray.exceptions.RayError:
            return False, None, 0
        return True, key, int(finished)

    # -- failed attempts seen by the driver -------------------------------------------------

    def _failed(
        self,
        cell: Cell,
        attempts: tuple[Attempt, ...],
        flight: _Flight,
        error_type: str,
        message: str,
    ) -> Iterator[CellResult]:
        """End an attempt that ended on the driver's side (its worker lost or stopped, or
        blocked by it); yields the cell's result when it is over (otherwise the cell is
        scheduled again)."""
        attempt = self._protocol.observe(cell, attempts, flight.at, flight.t0)
        if error_type == WORKER_LOST:
            # Who killed a shared worker is unknown: the cell runs alone next, and only
            # the losses it suffers alone count against it.
            alone = self._losses_alone.get(cell.key, 0) + (1 if flight.isolated else 0)
            self._losses_alone[cell.key] = alone
            decision = attempt.lost(error_type, message, give_up=alone >= MAX_WORKER_LOSSES)
            if isinstance(decision, Retry):
                heapq.heappush(
                    self._suspects,
                    (
                        time.monotonic() + decision.delay,
                        next(self._sequence),
                        cell,
                        decision.attempts,
                    ),
                )
                return
        elif error_type == WORKER_STOPPED:
            decision = attempt.lost(error_type, message)
        else:
            decision = attempt.timed_out(message)
        if isinstance(decision, GiveUp):
            yield self._failure(cell, decision.attempts)
        else:
            self._retry_later(cell, decision.attempts, decision.delay)

    def _retry_later(self, cell: Cell, attempts: tuple[Attempt, ...], delay: float) -> None:
        heapq.heappush(
            self._retries, (time.monotonic() + delay, next(self._sequence), cell, attempts)
        )

    def _failure(self, cell: Cell, attempts: tuple[Attempt, ...]) -> CellResult:
        """The failed cell's result, scored here (evaluators score failures too)."""
        if self._scorer is None:
            self._scorer = Scorer(self._job)
        return self._scorer.failure(cell, attempts)
