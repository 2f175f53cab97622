"""What one run's page shows, read from the store: plain data, no HTML."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from wtb.api.comparison import ComparisonMatrix
from wtb.comparison.cases import CaseComparison, case_comparison_for_run
from wtb.comparison.stored import matrix_for_run
from wtb.domain import Case, NodeAggregate
from wtb.runs.record import recorded_spec
from wtb.storage.records import RunProgress, RunRecord
from wtb.variant_matrix import baseline_of, expand_combinations, fixed_label

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore


class FailureGroupLike(Protocol):
    """Failed cells grouped by combination, error and node: what the page's failure
    section reads (the shape of `wtb.comparison.failures.FailureGroup`)."""

    @property
    def combo_key(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def error_type(self) -> str: ...
    @property
    def node(self) -> str | None: ...
    @property
    def message(self) -> str: ...
    @property
    def count(self) -> int: ...
    @property
    def example_case(self) -> str: ...
    @property
    def example_cell(self) -> str: ...
    @property
    def example_message(self) -> str: ...
    @property
    def example_traceback(self) -> str | None: ...


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
    failure_groups: Sequence[FailureGroupLike] | None
    """None: this build does not group failures (the page says so)."""
    focus: str | None = None
    """The output path the primary metric's evaluator reads (shown first), if any."""


def failure_groups_for(store: ResultStore, run_id: int) -> Sequence[FailureGroupLike] | None:
    """The run's failure groups; None until failure grouping is part of WTB."""
    del store, run_id
    return None


def load_run_page(
    store: ResultStore,
    run: RunRecord,
    *,
    failure_groups: Sequence[FailureGroupLike] | None = None,
) -> RunPage:
    """Read run `run` back from the store: its matrix, its cases, its node figures.

    `failure_groups` given is shown as it is; otherwise `failure_groups_for` finds them.
    """
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
        failure_groups=(
            failure_groups if failure_groups is not None else failure_groups_for(store, run.id)
        ),
        focus=spec.evaluator(spec.primary_metric).output,
    )
