"""Executing a run: its unrecorded cells through a runner, their results into the store.

The same for `wtb run` (inline or on Ray) and the batch driver: the runner yields results,
a writer records them in batches with their audit events, and the run is marked finished
when every cell is recorded. Recording is idempotent per cell, so an interrupted run
resumes where it stopped and no cell is recorded twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wtb import events
from wtb._iterables import chunked
from wtb.domain import Cell, CellResult
from wtb.errors import RunDeadlineExceeded
from wtb.events import EventBus
from wtb.pipeline.prepare import PreparedBatch
from wtb.pipeline.reuse import Reuse
from wtb.plan import Plan
from wtb.runners.base import Runner
from wtb.runs.spec import RunSpec
from wtb.storage.records import RunRecord
from wtb.storage.values import fit_for_store

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

_LOOKUP_CHUNK = 500
"""Planned cells checked against the store at a time: bounds the driver's memory."""


def pending_cells(plan: Plan, store: ResultStore, run_id: int) -> Iterator[Cell]:
    """The plan's cells not yet recorded, looked up chunk by chunk (memory stays flat)."""
    for chunk in chunked(plan.iter_cells(), _LOOKUP_CHUNK):
        missing = set(store.missing_keys(run_id, [c.key for c in chunk]))
        if missing:
            yield from (c for c in chunk if c.key in missing)


class ResultWriter:
    """Buffers results and audit events and writes them in batches, by size or by age.

    Writes happen in the caller's thread when a batch is full, and in a flusher thread
    when results trickle in slowly, so a slow cell never holds others' results back.
    Buffers are swapped under a short lock and written outside it: producers (the event
    loop publishing audit events) never wait for the database. A write that fails leaves
    its results in the buffer for the next one. Results are fitted to the store before
    they are buffered (`max_output_bytes`, default `WTB_MAX_OUTPUT_BYTES`).
    """

    def __init__(
        self,
        store: ResultStore,
        run_id: int,
        *,
        every: int,
        seconds: float,
        fingerprint: Callable[[Cell], str] | None = None,
        max_output_bytes: int | None = None,
    ) -> None:
        self._store = store
        self._max_output_bytes = (
            _max_output_bytes() if max_output_bytes is None else max_output_bytes
        )
        self._fingerprint = fingerprint
        self._run_id = run_id
        self._every = every
        self._seconds = seconds
        self._buffer_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._results: list[CellResult] = []
        self._events: list[events.Event] = []
        self._closed = threading.Event()
        self._error: BaseException | None = None
        self.recorded = 0
        self._flusher = threading.Thread(target=self._tick, name="wtb-writer", daemon=True)
        self._flusher.start()

    def add_event(self, event: events.Event) -> None:
        with self._buffer_lock:
            self._events.append(event)

    def add(self, result: CellResult) -> None:
        """Buffer a result, as the store can keep it (`wtb.storage.values.fit_for_store`:
        a large output truncated with a marker, an unstorable count a failed cell)."""
        if self._error is not None:
            raise self._error
        result = fit_for_store(result, self._max_output_bytes)
        with self._buffer_lock:
            self._results.append(result)
            full = len(self._results) >= self._every
        if full:
            self.flush()

    def flush(self) -> None:
        with self._write_lock:
            with self._buffer_lock:
                results, self._results = self._results, []
                pending, self._events = self._events, []
            if not results and not pending:
                return
            try:
                prints = (
                    {r.cell.key: self._fingerprint(r.cell) for r in results}
                    if self._fingerprint is not None
                    else None
                )
                self.recorded += self._store.record(
                    self._run_id, results, pending, fingerprints=prints
                )
            except BaseException:
                with self._buffer_lock:
                    self._results[:0] = results
                    self._events[:0] = pending
                raise

    def _tick(self) -> None:
        while not self._closed.wait(self._seconds):
            try:
                self.flush()
            except BaseException as exc:  # surfaced to the consumer on its next add/close
                self._error = exc
                return

    def close(self) -> None:
        self._closed.set()
        self._flusher.join()
        self.flush()


def _max_output_bytes() -> int:
    from wtb.settings import get_settings

    return get_settings().max_output_bytes


def _close_and_mark(
    store: ResultStore, run_id: int, writer: ResultWriter, failure: BaseException | None
) -> None:
    """Write what is buffered; when the run stopped early, say so in the run's status.

    A stopped run is marked failed with the reason; running it again resumes it.
    """
    try:
        writer.close()
    finally:
        if failure is not None:
            with contextlib.suppress(Exception):  # the store may be what failed
                store.finish_run(run_id, "failed", error=f"stopped: {_reason(failure)}"[:2000])


def _reason(exc: BaseException) -> str:
    """Why the run stopped: Ctrl-C, a signal (SIGTERM: its exception says so), an error."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if not isinstance(exc, Exception):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class _Deadline:
    seconds: float | None
    started: float

    def check(self, done: int, total: int) -> None:
        if self.seconds is None or time.perf_counter() - self.started < self.seconds:
            return
        raise RunDeadlineExceeded(
            f"the run did not finish within spec.activeDeadlineSeconds ({self.seconds:g} s): "
            f"stopped with {done} of {total} cells recorded (kept)",
            fix="run it again to resume it, or raise spec.activeDeadlineSeconds",
        )


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    run_key: str
    total: int
    recorded_before: int
    recorded_now: int
    seconds: float
    reused_now: int = 0
    """Cells whose results were reused from earlier runs by this execution."""


ProgressCallback = Callable[[int, int], None]


def run_batch(
    prepared: PreparedBatch,
    store: ResultStore,
    runner: Runner,
    *,
    bus: EventBus | None = None,
    on_progress: ProgressCallback | None = None,
    flush_every: int = 200,
    flush_seconds: float = 0.5,
    reuse: bool = True,
) -> RunOutcome:
    """Run the cells of a batch that are not yet recorded and record them (resumable).

    An interrupted run (Ctrl-C, a crash) keeps every result already written; running the
    same batch again runs only the rest. Each cell is recorded at most once. With `reuse`,
    cells that earlier runs of the BatchTest recorded with the same fingerprint are
    reused rather than run (`wtb.pipeline.reuse`).
    """
    return execute_run(
        store,
        prepared.record(store),
        prepared.job,
        prepared.plan,
        runner,
        bus=bus,
        on_progress=on_progress,
        flush_every=flush_every,
        flush_seconds=flush_seconds,
        build_warnings=[str(w) for w in prepared.warnings],
        reuse=Reuse(prepared.job, prepared.fingerprinter),
        reuse_results=reuse,
        deadline_seconds=prepared.batch.spec.active_deadline_seconds,
    )


def execute_run(
    store: ResultStore,
    run: RunRecord,
    job: RunSpec,
    plan: Plan,
    runner: Runner,
    *,
    bus: EventBus | None = None,
    on_progress: ProgressCallback | None = None,
    flush_every: int = 200,
    flush_seconds: float = 0.5,
    build_warnings: Sequence[str] = (),
    reuse: Reuse | None = None,
    reuse_results: bool = True,
    deadline_seconds: float | None = None,
) -> RunOutcome:
    """Run a started run's unrecorded cells with `runner`, record them, and mark the run
    succeeded when every cell is recorded (by this process or a concurrent one).

    With `reuse`, each recorded cell keeps its fingerprint, and (unless `reuse_results` is
    False) the results earlier runs of the BatchTest recorded with the same fingerprint are
    copied in first, so only the other cells run.

    `build_warnings` (raised while the graph and variants were built, each naming its
    variant) are kept in the audit log with the `batch.started` event.

    `deadline_seconds` (the BatchTest's `activeDeadlineSeconds`, for runs in this process)
    stops the run with RunDeadlineExceeded once that long has passed with cells left: it is
    checked as each result arrives, and every cell in flight ends at its own timeout."""
    bus = bus or EventBus()
    started = time.perf_counter()
    deadline = _Deadline(deadline_seconds, started)
    before = store.progress(run.id).done
    total = plan.total
    reused = 0
    if reuse is not None and reuse_results and before < total:

        def on_reused(count: int) -> None:
            nonlocal reused
            reused += count
            if on_progress:
                on_progress(before + reused, total)

        try:
            reuse.fill(store, run, plan, on_reused)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the store may be what failed
                store.finish_run(run.id, "failed", error=f"stopped: {_reason(exc)}"[:2000])
            raise
    writer = ResultWriter(
        store,
        run.id,
        every=flush_every,
        seconds=flush_seconds,
        fingerprint=None if reuse is None else reuse.fingerprint(),
    )
    unsubscribe = bus.subscribe(writer.add_event)
    started_data: dict[str, Any] = {"run": run.run_key, "total": total}
    if build_warnings:
        started_data["warnings"] = list(build_warnings)
    bus.publish(events.Event(events.BATCH_STARTED, None, started_data))
    done = before + reused
    if on_progress:
        on_progress(done, total)
    results = runner.run(job, pending_cells(plan, store, run.id), bus)
    failure: BaseException | None = None
    try:
        for result in results:
            writer.add(result)
            done += 1
            if on_progress:
                on_progress(done, total)
            if done < total:
                deadline.check(done, total)
        bus.publish(events.Event(events.BATCH_FINISHED, None, {"run": run.run_key}))
    except BaseException as exc:
        failure = exc
        bus.publish(
            events.Event(events.BATCH_FAILED, None, {"run": run.run_key, "reason": _reason(exc)})
        )
        raise
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        unsubscribe()
        _close_and_mark(store, run.id, writer, failure)
    progress = store.progress(run.id)
    if progress.done >= total:
        store.finish_run(run.id, "succeeded")
    return RunOutcome(
        run_id=run.id,
        run_key=run.run_key,
        total=total,
        recorded_before=before,
        recorded_now=writer.recorded,
        seconds=time.perf_counter() - started,
        reused_now=reused,
    )
