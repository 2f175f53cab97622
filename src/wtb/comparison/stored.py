"""The comparison matrix of a recorded run: aggregated in the database, then the statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wtb.api.batchtest import BatchTestSpec
from wtb.api.comparison import ComparisonMatrix
from wtb.comparison.build import build_matrix
from wtb.domain import Combination

UNBOUNDED_TYPES = frozenset({"latency", "tokens", "cost"})
"""Evaluators whose values are amounts, not scores: never given a [0, 1] interval, even
when every value happens to lie there (a cost in dollars)."""

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore


def matrix_for_run(
    store: ResultStore,
    run_id: int,
    spec: BatchTestSpec,
    baseline: Combination,
    *,
    max_rows: int | None = None,
) -> ComparisonMatrix:
    """Aggregate in the database, then compute the statistics: the comparison matrix."""
    metrics = [(e.name, e.direction_higher_is_better) for e in spec.evaluators]
    return build_matrix(
        unbounded={e.name for e in spec.evaluators if e.type in UNBOUNDED_TYPES},
        combos=store.combo_aggregates(run_id, [m for m, _ in metrics]),
        cases=store.case_aggregates(run_id, [m for m, _ in metrics], spec.primary_metric),
        metrics=metrics,
        primary_metric=spec.primary_metric,
        baseline=baseline,
        alpha=spec.alpha,
        max_rows=max_rows,
        fixed=spec.fixed,
        nodes=store.node_aggregates(run_id),
    )
