"""What one run's page shows, read from the store: plain data, no HTML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wtb.api.comparison import ComparisonMatrix
from wtb.comparison.cases import CaseComparison, case_comparison_for_run
from wtb.comparison.failures import FailureSummary, failure_summary
from wtb.comparison.stored import matrix_for_run
from wtb.domain import Case, NodeAggregate
from wtb.runs.record import recorded_spec
from wtb.storage.records import RunProgress, RunRecord
from wtb.variant_matrix import baseline_of, expand_combinations, fixed_label

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore


@dataclass(frozen=True, slots=True)
class RunPage:
    """Everything a run's page shows."""

    run: RunRecord
    progress: RunProgress
    matrix: ComparisonMatrix
    cases: CaseComparison
    case_specs: dict[str, Case]
    """The run's data set by case id (empty for a run recorded without it)."""
    nodes: dict[str, dict[str, NodeAggregate]]
    """Per combo_key, per node: time and tokens over the combination's succeeded cells."""
    repeats: int
    fixed: str
    """The nodes replaced in every cell, as a label ('' when none)."""
    failures: FailureSummary
    """The failed cells grouped per combination (bounded), and what the bound left out."""
    focus: str | None = None
    """The output path the primary metric's evaluator reads (shown first), if any."""


def load_run_page(store: ResultStore, run: RunRecord) -> RunPage:
    """Read run `run` back from the store: its matrix, its cases, its node figures, its
    failure groups."""
    recorded = recorded_spec(run)
    spec = recorded.batch
    baseline = baseline_of(spec)
    return RunPage(
        run=run,
        progress=store.progress(run.id),
        matrix=matrix_for_run(store, run.id, spec, baseline),
        cases=case_comparison_for_run(store, run.id, spec, baseline, expand_combinations(spec)),
        case_specs=recorded.case_index(),
        nodes=store.node_aggregates(run.id),
        repeats=spec.repeats,
        fixed=fixed_label(spec),
        failures=failure_summary(store, run.id),
        focus=spec.evaluator(spec.primary_metric).output,
    )
