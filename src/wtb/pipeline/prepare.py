"""Preparing a run: every check that needs the workflow's code, then the plan of cells.

`prepare` imports the graph factory, every variant named in the matrix and the evaluators,
compiles the graph, loads the data set and expands the matrix: a mistake is refused before
any cell runs, and nothing is written. `wtb validate` does exactly this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wtb.api.batchtest import BatchTest
from wtb.api.workflow import ORIGINAL, Workflow
from wtb.dataset import load_cases
from wtb.errors import ManifestError
from wtb.evaluators.build import build_evaluators
from wtb.graphs import (
    check_compiles,
    check_node_path,
    load_builder,
    node_paths,
    resolve_variant,
)
from wtb.plan import Plan, build_plan
from wtb.runs.keys import local_run_key
from wtb.runs.record import record_run, run_info
from wtb.runs.spec import RunSpec
from wtb.storage.records import RunInfo, RunRecord

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore


@dataclass(frozen=True)
class PreparedBatch:
    batch: BatchTest
    workflow: Workflow
    job: RunSpec
    plan: Plan
    run_info: RunInfo

    def record(self, store: ResultStore, *, start: bool = True) -> RunRecord:
        """Record the workflow and the run; without `start` it stays pending for a driver."""
        return record_run(store, self.workflow, self.job, self.run_info, start=start)


def prepare(
    batch: BatchTest,
    workflow: Workflow,
    *,
    base_dir: Path,
    where: str,
    workflow_where: str,
    python_path: tuple[str, ...] = (),
    run_key: str | None = None,
) -> PreparedBatch:
    """Check everything a run needs and expand the plan; nothing is written.

    The run key is `run_key` when given (a run recorded already), else the local one,
    derived from the content.
    """
    spec = batch.spec
    builder = load_builder(workflow.spec, where=f"{workflow_where}: spec.graph")
    check_compiles(builder, where=f"{workflow_where}: spec.graph")
    nodes = node_paths(builder)
    for node in workflow.spec.variants:
        check_node_path(
            node, nodes, field="variants", where=f"{workflow_where}: spec.variants.{node}"
        )
    graph = f"workflow {workflow.metadata.name!r}"
    for node, variants in spec.matrix.items():
        check_node_path(
            node, nodes, field="matrix", graph=graph, where=f"{where}: spec.matrix.{node}"
        )
        for i, variant in enumerate(variants):
            if variant != ORIGINAL:
                resolve_variant(
                    workflow.spec,
                    node,
                    variant,
                    where=f"{where}: spec.matrix.{node}[{i}]",
                    workflow_where=workflow_where,
                )
    for node, variant in (spec.fixed or {}).items():
        check_node_path(
            node, nodes, field="fixed", graph=graph, where=f"{where}: spec.fixed.{node}"
        )
        resolve_variant(
            workflow.spec,
            node,
            variant,
            where=f"{where}: spec.fixed.{node}",
            workflow_where=workflow_where,
        )
    build_evaluators(spec.evaluators, where=f"{where}: spec.evaluators")
    cases = load_cases(spec.dataset, base_dir, where=f"{where}: spec.dataset")
    plan = build_plan(spec, cases, where=f"{where}: spec")
    job = RunSpec(workflow=workflow.spec, batch=spec, cases=tuple(cases), python_path=python_path)
    meta = batch.metadata
    key = run_key or local_run_key(meta.namespace, meta.name, job.digest())
    info = run_info(batch, job, key, plan.total)
    return PreparedBatch(batch=batch, workflow=workflow, job=job, plan=plan, run_info=info)


def plan_recorded_run(
    store: ResultStore, run: RunRecord, *, base_dir: Path, python_path: tuple[str, ...]
) -> RunRecord:
    """Plan a run the operator recorded: load the data set (relative to `base_dir`, the
    image's working directory), check the workflow's code as `prepare` does, and record the
    cases and the cell count."""
    recorded = RunSpec.from_record(run.spec)
    meta = {"name": run.name, "namespace": run.namespace, "uid": run.uid}
    batch = BatchTest.model_validate(
        {"metadata": {**meta, "generation": run.generation}, "spec": recorded.batch}
    )
    workflow_name = recorded.batch.workflow_ref.name
    workflow = Workflow.model_validate(
        {
            "metadata": {"name": workflow_name, "namespace": run.namespace},
            "spec": recorded.workflow,
        }
    )
    where = f"BatchTest {run.namespace}/{run.name}"
    prepared = prepare(
        batch,
        workflow,
        base_dir=base_dir,
        where=where,
        workflow_where=f"Workflow {run.namespace}/{workflow_name}",
        python_path=python_path,
        run_key=run.run_key,
    )
    planned = store.plan_run(run.run_key, prepared.job.to_record(), prepared.plan.total)
    if planned is None:
        raise ManifestError(f"run {run.run_key!r} was deleted from the result store", where=where)
    return planned
