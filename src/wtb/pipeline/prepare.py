"""Preparing a run: every check that needs the workflow's code, then the plan of cells.

`prepare` imports the graph factory, every variant named in the matrix and the evaluators,
compiles the graph, loads the data set and expands the matrix: a mistake is refused before
any cell runs, and nothing is written. `wtb validate` does exactly this.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wtb.api.batchtest import BatchTest, BatchTestSpec
from wtb.api.invocation import merge_invocations
from wtb.api.workflow import ORIGINAL, Workflow
from wtb.cells.invocation import case_invocation, combination_invocation
from wtb.dataset import load_cases
from wtb.domain import Case
from wtb.errors import ManifestError
from wtb.evaluators.build import build_evaluators
from wtb.graphs import (
    check_compiles,
    check_context,
    check_node_path,
    input_keys,
    load_builder,
    node_paths,
    resolve_variant,
)
from wtb.plan import Plan, build_plan
from wtb.runs.fingerprints import Fingerprinter
from wtb.runs.keys import local_run_key
from wtb.runs.record import record_run, run_info
from wtb.runs.spec import RunSpec
from wtb.storage.records import RunInfo, RunRecord
from wtb.variant_matrix import check_combination_count, combination_label

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

    from wtb.storage.store import ResultStore


log = logging.getLogger("wtb.driver")


@dataclass(frozen=True)
class BuildWarning:
    """A warning LangGraph or the user's code raised while WTB built the graph or a variant
    (LangGraph's about a node's `config` annotation, a deprecation): `subject` names what
    was being built (`the graph`, `node 'x', variant 'y'`), `where` the manifest field."""

    subject: str
    where: str
    category: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.subject}: {self.category}: {self.message}"


@contextmanager
def _attributed(sink: list[BuildWarning], subject: str, where: str) -> Iterator[None]:
    """Collect the warnings raised inside into `sink`, attributed to `subject`, instead of
    letting them go to stderr unattributed (or be hidden by the filters after a first time).
    Not thread-safe (`warnings.catch_warnings`): `prepare` runs before any cell."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen: set[tuple[str, str]] = set()
    for w in caught:
        key = (w.category.__name__, str(w.message))
        if key not in seen:
            seen.add(key)
            sink.append(BuildWarning(subject, where, *key))


@dataclass(frozen=True)
class CaseSelection:
    """Some of the data set's cases, for a smoke run (`wtb run --limit/--cases`): the
    first `limit`, or those of `ids` (in the data set's order). A smoke run is a run of its
    own, keyed apart (`wtb.runs.keys.SMOKE`), never taken for the full run."""

    limit: int | None = None
    ids: tuple[str, ...] = ()

    def apply(self, cases: list[Case], *, where: str) -> list[Case]:
        chosen = cases
        if self.ids:
            known = {c.id for c in cases}
            unknown = [i for i in self.ids if i not in known]
            if unknown:
                raise ManifestError(
                    f"the data set has no case {', '.join(map(repr, unknown))}",
                    where=where,
                    fix="give case ids of the data set (`wtb results --cells -o json` "
                    "lists them): " + ", ".join(c.id for c in cases[:10]),
                )
            wanted = set(self.ids)
            chosen = [c for c in chosen if c.id in wanted]
        if self.limit is not None:
            chosen = chosen[: self.limit]
        return chosen


@dataclass(frozen=True)
class PreparedBatch:
    batch: BatchTest
    workflow: Workflow
    job: RunSpec
    plan: Plan
    run_info: RunInfo
    fingerprinter: Fingerprinter
    warnings: tuple[BuildWarning, ...] = ()
    """Warnings raised while the graph and the variants were built (none is hidden)."""
    all_cases: int = 0
    """The data set's cases; more than the plan's in a smoke run."""

    @property
    def smoke(self) -> bool:
        """A run of some of the cases (`CaseSelection`)."""
        return self.all_cases > len(self.plan.cases)

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
    select: CaseSelection | None = None,
) -> PreparedBatch:
    """Check everything a run needs and expand the plan; nothing is written.

    The run key is `run_key` when given (a run recorded already), else the local one,
    derived from the content and the code's fingerprint. With `select`, the run is a
    smoke run of some of the cases.
    """
    spec = batch.spec
    # The matrix's size first, counted without expanding it: before any code is imported.
    check_combination_count(spec, where=f"{where}: spec")
    raised: list[BuildWarning] = []
    with _attributed(raised, "the graph", f"{workflow_where}: spec.graph"):
        builder = load_builder(workflow.spec, where=f"{workflow_where}: spec.graph")
        check_compiles(builder, where=f"{workflow_where}: spec.graph")
    nodes = node_paths(builder)
    for node in workflow.spec.variants:
        check_node_path(
            node, nodes, field="variants", where=f"{workflow_where}: spec.variants.{node}"
        )
    for setting in workflow.spec.settings or {}:
        if setting in nodes:
            raise ManifestError(
                f"setting {setting!r} has the name of a node of the graph",
                where=f"{workflow_where}: spec.settings.{setting}",
                fix="a setting and a node are both matrix axes: name the setting otherwise",
            )
    graph = f"workflow {workflow.metadata.name!r}"
    for node, variants in spec.matrix.items():
        if workflow.spec.is_setting(node):
            _check_setting_axis(workflow, node, variants, where=f"{where}: spec.matrix.{node}")
            continue
        check_node_path(
            node, nodes, field="matrix", graph=graph, where=f"{where}: spec.matrix.{node}"
        )
        for i, variant in enumerate(variants):
            if variant != ORIGINAL:
                with _attributed(
                    raised,
                    f"node {node!r}, variant {variant!r}",
                    f"{where}: spec.matrix.{node}[{i}]",
                ):
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
        with _attributed(
            raised, f"node {node!r}, variant {variant!r}", f"{where}: spec.fixed.{node}"
        ):
            resolve_variant(
                workflow.spec,
                node,
                variant,
                where=f"{where}: spec.fixed.{node}",
                workflow_where=workflow_where,
            )
    build_evaluators(spec.evaluators, where=f"{where}: spec.evaluators")
    cases = load_cases(
        spec.dataset, base_dir, where=f"{where}: spec.dataset", input_keys=input_keys(builder)
    )
    all_cases = len(cases)
    if select is not None:
        cases = select.apply(cases, where=f"{where}: spec.dataset")
        if not cases:
            raise ManifestError(
                "no case selected", where=f"{where}: spec.dataset", fix="select at least one case"
            )
    plan = build_plan(spec, cases, where=f"{where}: spec")
    _check_contexts(builder, workflow, spec, plan, where=where, workflow_where=workflow_where)
    meta = batch.metadata
    fingerprinter = Fingerprinter(workflow.spec, spec, cases, python_path)
    job = RunSpec(
        workflow=workflow.spec,
        batch=spec,
        cases=tuple(cases),
        python_path=python_path,
        batch_name=meta.name,
        evaluator_code=fingerprinter.evaluators,
    )
    key = run_key or local_run_key(
        meta.namespace,
        meta.name,
        job.identity_digest(fingerprinter.code),
        smoke=len(cases) < all_cases,
    )
    job = dataclasses.replace(job, run_key=key)
    info = run_info(batch, job, key, plan.total, code_fingerprint=fingerprinter.code)
    return PreparedBatch(
        batch=batch,
        workflow=workflow,
        job=job,
        plan=plan,
        run_info=info,
        fingerprinter=fingerprinter,
        warnings=tuple(raised),
        all_cases=all_cases,
    )


def _check_setting_axis(
    workflow: Workflow, setting: str, choices: list[str], *, where: str
) -> None:
    known = [c.name for c in (workflow.spec.settings or {}).get(setting, [])]
    for i, choice in enumerate(choices):
        if choice != ORIGINAL and choice not in known:
            raise ManifestError(
                f"setting {setting!r} has no choice {choice!r} in workflow "
                f"{workflow.metadata.name!r}",
                where=f"{where}[{i}]",
                fix=f"use `{ORIGINAL}` (the setting left out) or one of: {', '.join(known)}",
            )


def _check_contexts(
    builder: StateGraph[Any],
    workflow: Workflow,
    spec: BatchTestSpec,
    plan: Plan,
    *,
    where: str,
    workflow_where: str,
) -> None:
    """Check the merged context of every combination, and of every case that gives a context
    of its own, against the graph's context_schema: a missing or mistyped field is refused
    before any cell runs, not as a failure in every cell."""
    if builder.context_schema is None:
        return
    fix = (
        "give the context's fields in `invoke.context` (on the Workflow, the BatchTest, a "
        "variant or setting, or a data set row), as the graph's context_schema declares them"
    )
    own = [c for c in plan.cases if c.invoke and "context" in c.invoke]
    for combination in plan.combinations:
        parts = combination_invocation(workflow.spec, spec.invoke, combination)
        label = combination_label(combination)
        shared = merge_invocations(parts).context
        check_context(builder, shared, where=f"{where}: spec (combination {label})", fix=fix)
        for case in own:
            context = merge_invocations([*parts, case_invocation(case)]).context
            check_context(
                builder,
                context,
                where=f"{where}: spec.dataset, case {case.id!r} (combination {label})",
                fix=fix,
            )


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
    for warning in prepared.warnings:
        log.warning("run %s: %s", run.run_key, warning)
    planned = store.plan_run(
        run.run_key,
        prepared.job.to_record(),
        prepared.plan.total,
        code_fingerprint=prepared.fingerprinter.code,
    )
    if planned is None:
        raise ManifestError(f"run {run.run_key!r} was deleted from the result store", where=where)
    return planned
