"""Recording runs in the result store: a run of `wtb run` with its data set, or a run the
operator records without it (for the batch driver to plan in the workflow's image)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wtb.api.batchtest import BatchTest
from wtb.api.workflow import Workflow
from wtb.runs.spec import RunSpec
from wtb.storage.records import RunInfo, RunRecord

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore


def run_info(
    batch: BatchTest,
    spec: RunSpec,
    run_key: str,
    total_cells: int,
    *,
    code_fingerprint: str | None = None,
) -> RunInfo:
    """What the store needs to get or create the run of `batch` with `spec` (planned with
    code of `code_fingerprint`)."""
    meta = batch.metadata
    return RunInfo(
        run_key=run_key,
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        generation=meta.generation,
        spec_digest=spec.digest(),
        spec=spec.to_record(),
        total_cells=total_cells,
        code_fingerprint=code_fingerprint,
    )


def record_run(
    store: ResultStore, workflow: Workflow, spec: RunSpec, info: RunInfo, *, start: bool = True
) -> RunRecord:
    """Record the workflow and the run (idempotent per run key). Without `start` the run
    stays pending: everything a batch driver needs to run it is then in the database."""
    workflow_id = store.upsert_workflow(
        workflow.metadata.namespace,
        workflow.metadata.name,
        spec.workflow_digest(),
        spec.to_record()["workflow"],
    )
    return store.begin_run(info.with_workflow(workflow_id), start=start)


def record_unplanned_run(
    store: ResultStore, batch: BatchTest, workflow: Workflow, *, run_key: str
) -> RunRecord:
    """Record a pending run for a batch driver to plan and run (idempotent per run key): the
    resources' specs, without the data set or the cell count, which only the workflow's
    image can give."""
    spec = RunSpec(workflow=workflow.spec, batch=batch.spec, planned=False)
    return record_run(store, workflow, spec, run_info(batch, spec, run_key, 0), start=False)


def recorded_spec(run: RunRecord) -> RunSpec:
    """The typed spec a run was recorded with."""
    return RunSpec.from_record(run.spec)


def is_planned(run: RunRecord) -> bool:
    """Whether the run has its data set and cell count (the driver plans operator runs)."""
    return recorded_spec(run).planned
