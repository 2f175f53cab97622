"""The pipeline every face shares: prepare (validate, expand) -> run -> record -> matrix."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wtb import events
from wtb.api.batchtest import BatchTest, BatchTestSpec
from wtb.api.matrix import ComparisonMatrix
from wtb.api.workflow import ORIGINAL, Workflow
from wtb.canonical import content_hash
from wtb.dataset import load_cases
from wtb.errors import ManifestError
from wtb.evaluators import build_evaluators
from wtb.events import EventBus
from wtb.graphs import check_compiles, graph_nodes, load_builder, resolve_variant
from wtb.iterables import chunked
from wtb.job import BatchJob
from wtb.matrix import build_matrix
from wtb.plan import Plan, build_plan
from wtb.results import Cell, CellResult
from wtb.runners.base import Runner
from wtb.storage.records import RunInfo, RunRecord

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

_LOOKUP_CHUNK = 500
"""Planned cells checked against the store at a time: bounds the driver's memory."""


@dataclass(frozen=True)
class PreparedBatch:
    batch: BatchTest
    workflow: Workflow
    job: BatchJob
    plan: Plan
    run_info: RunInfo


def prepare(
    batch: BatchTest,
    workflow: Workflow,
    *,
    base_dir: Path,
    where: str,
    workflow_where: str,
    python_path: tuple[str, ...] = (),
) -> PreparedBatch:
    """Check everything a run needs and expand the plan; nothing is written.

    Imports the workflow's code (graph factory, every variant named in the matrix,
    evaluators) so that a mistake is refused before any cell runs.
    """
    spec = batch.spec
    builder = load_builder(workflow.spec, where=f"{workflow_where}: spec.graph")
    check_compiles(builder, where=f"{workflow_where}: spec.graph")
    nodes = graph_nodes(builder)
    for node in workflow.spec.variants:
        if node not in nodes:
            raise ManifestError(
                f"variants name node {node!r}, which the graph does not have",
                where=f"{workflow_where}: spec.variants.{node}",
                fix=f"use one of the graph's nodes: {', '.join(nodes)}",
            )
    for node, variants in spec.matrix.items():
        if node not in nodes:
            raise ManifestError(
                f"matrix names node {node!r}, which workflow "
                f"{workflow.metadata.name!r} does not have",
                where=f"{where}: spec.matrix.{node}",
                fix=f"use one of the graph's nodes: {', '.join(nodes)}",
            )
        for i, variant in enumerate(variants):
            if variant != ORIGINAL:
                resolve_variant(
                    workflow.spec, node, variant, where=f"{where}: spec.matrix.{node}[{i}]"
                )
    build_evaluators(spec.evaluators, where=f"{where}: spec.evaluators")
    cases = load_cases(spec.dataset, base_dir, where=f"{where}: spec.dataset")
    plan = build_plan(spec, cases, where=f"{where}: spec")
    job = BatchJob(workflow=workflow.spec, batch=spec, cases=tuple(cases), python_path=python_path)
    digest = job.digest()
    meta = batch.metadata
    run_info = RunInfo(
        run_key=f"{meta.namespace}/{meta.name}:{digest[:16]}",
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        generation=meta.generation,
        spec_digest=digest,
        spec=job.to_record(),
        total_cells=plan.total,
    )
    return PreparedBatch(batch=batch, workflow=workflow, job=job, plan=plan, run_info=run_info)


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
    its results in the buffer for the next one.
    """

    def __init__(self, store: ResultStore, run_id: int, *, every: int, seconds: float) -> None:
        self._store = store
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
        if self._error is not None:
            raise self._error
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
                self.recorded += self._store.record(self._run_id, results, pending)
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
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class RunOutcome:
    run_id: int
    run_key: str
    total: int
    recorded_before: int
    recorded_now: int
    seconds: float


ProgressCallback = Callable[[int, int], None]


def record_run(store: ResultStore, prepared: PreparedBatch, *, start: bool = True) -> RunRecord:
    """Record the batch's workflow and run (spec, data set, cell count) in the store.

    Without `start` the run stays pending: everything a batch driver needs to run it is
    then in the database (`wtb.driver`).
    """
    workflow = prepared.workflow
    workflow_id = store.upsert_workflow(
        workflow.metadata.namespace,
        workflow.metadata.name,
        content_hash(prepared.run_info.spec["workflow"]),
        prepared.run_info.spec["workflow"],
    )
    return store.begin_run(
        dataclasses.replace(prepared.run_info, workflow_id=workflow_id), start=start
    )


def unplanned_run_info(batch: BatchTest, workflow: Workflow, run_key: str) -> RunInfo:
    """A run as the operator records it: the resources' specs, without the data set or the
    cell count, which only the workflow's image can give (the batch driver plans it)."""
    spec = {
        "workflow": workflow.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "batchTest": batch.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    meta = batch.metadata
    return RunInfo(
        run_key=run_key,
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        generation=meta.generation,
        spec_digest=content_hash(spec),
        spec=spec,
        total_cells=0,
    )


def record_unplanned_run(
    store: ResultStore, batch: BatchTest, workflow: Workflow, *, run_key: str
) -> RunRecord:
    """Record a pending run for a batch driver to plan and run (idempotent per run key)."""
    info = unplanned_run_info(batch, workflow, run_key)
    workflow_id = store.upsert_workflow(
        workflow.metadata.namespace,
        workflow.metadata.name,
        content_hash(info.spec["workflow"]),
        info.spec["workflow"],
    )
    return store.begin_run(dataclasses.replace(info, workflow_id=workflow_id), start=False)


def is_planned(run: RunRecord) -> bool:
    return "cases" in run.spec


def plan_recorded_run(
    store: ResultStore, run: RunRecord, *, base_dir: Path, python_path: tuple[str, ...]
) -> RunRecord:
    """Plan a run the operator recorded: load the data set (relative to `base_dir`, the
    image's working directory), check the workflow's code as `prepare` does, and record the
    cases and the cell count."""
    spec = BatchTestSpec.model_validate(run.spec["batchTest"])
    meta = {"name": run.name, "namespace": run.namespace, "uid": run.uid}
    batch = BatchTest.model_validate(
        {"metadata": {**meta, "generation": run.generation}, "spec": spec}
    )
    workflow = Workflow.model_validate(
        {
            "metadata": {"name": spec.workflow_ref.name, "namespace": run.namespace},
            "spec": run.spec["workflow"],
        }
    )
    where = f"BatchTest {run.namespace}/{run.name}"
    prepared = prepare(
        batch,
        workflow,
        base_dir=base_dir,
        where=where,
        workflow_where=f"Workflow {run.namespace}/{spec.workflow_ref.name}",
        python_path=python_path,
    )
    planned = store.plan_run(run.run_key, prepared.job.to_record(), prepared.plan.total)
    if planned is None:
        raise ManifestError(f"run {run.run_key!r} was deleted from the result store", where=where)
    return planned


def run_batch(
    prepared: PreparedBatch,
    store: ResultStore,
    runner: Runner,
    *,
    bus: EventBus | None = None,
    on_progress: ProgressCallback | None = None,
    flush_every: int = 200,
    flush_seconds: float = 0.5,
) -> RunOutcome:
    """Run the cells of a batch that are not yet recorded and record them (resumable).

    An interrupted run (Ctrl-C, a crash) keeps every result already written; running the
    same batch again runs only the rest. Each cell is recorded at most once.
    """
    return execute_run(
        store,
        record_run(store, prepared),
        prepared.job,
        prepared.plan,
        runner,
        bus=bus,
        on_progress=on_progress,
        flush_every=flush_every,
        flush_seconds=flush_seconds,
    )


def execute_run(
    store: ResultStore,
    run: RunRecord,
    job: BatchJob,
    plan: Plan,
    runner: Runner,
    *,
    bus: EventBus | None = None,
    on_progress: ProgressCallback | None = None,
    flush_every: int = 200,
    flush_seconds: float = 0.5,
) -> RunOutcome:
    """Run a started run's unrecorded cells with `runner`, record them, and mark the run
    succeeded when every cell is recorded (by this process or a concurrent one)."""
    bus = bus or EventBus()
    started = time.perf_counter()
    before = store.progress(run.id).done
    total = plan.total
    writer = ResultWriter(store, run.id, every=flush_every, seconds=flush_seconds)
    unsubscribe = bus.subscribe(writer.add_event)
    bus.publish(events.Event(events.BATCH_STARTED, None, {"run": run.run_key, "total": total}))
    done = before
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
    )


def matrix_for_run(
    store: ResultStore,
    run_id: int,
    spec: BatchTestSpec,
    baseline: tuple[tuple[str, str], ...],
    *,
    max_rows: int | None = None,
) -> ComparisonMatrix:
    """Aggregate in the database, then compute the statistics: the comparison matrix."""
    metrics = [(e.name, e.direction_higher_is_better) for e in spec.evaluators]
    return build_matrix(
        combos=store.combo_aggregates(run_id),
        cases=store.case_aggregates(run_id, [m for m, _ in metrics], spec.primary_metric),
        metrics=metrics,
        primary_metric=spec.primary_metric,
        baseline=baseline,
        alpha=spec.alpha,
        max_rows=max_rows,
    )
