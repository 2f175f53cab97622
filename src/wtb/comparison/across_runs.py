"""Two recorded runs compared: "is today's branch better than main?".

Per combination recorded in both runs (matched by its axes, not its position), the per-case
means of one metric are paired by case id, exactly as the matrix pairs a combination with
its baseline: `paired_delta` (candidate - base) per combination, `holm` over the
combinations, and the matrix's verdicts. What only one run has (cases, combinations) is
counted and named, never compared. The store aggregates; no cell is read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wtb.api.batchtest import BatchTestSpec
from wtb.api.comparison import DeltaSummary, Interval
from wtb.api.run_comparison import (
    MAX_LISTED_CASES,
    ComparedRun,
    OnlyIn,
    RunComparison,
    RunDeltaRow,
)
from wtb.comparison.build import verdict
from wtb.comparison.stats import STUDENT_T, RunningMean, holm, interval_method, paired_delta
from wtb.comparison.stored import UNBOUNDED_TYPES
from wtb.domain import Case, CaseAggregate, Combination, ComboAggregate
from wtb.errors import WtbError
from wtb.storage.records import RunRecord
from wtb.variant_matrix import combination_label

if TYPE_CHECKING:
    from wtb.storage.store import ResultStore

__all__ = ["MeasuredRun", "RunSide", "compare_measured", "compare_stored_runs", "measure"]


@dataclass(frozen=True, slots=True)
class RunSide:
    """A recorded run with the BatchTest spec and cases it was recorded with."""

    run: RunRecord
    spec: BatchTestSpec
    cases: Sequence[Case] = ()


@dataclass(slots=True)
class MeasuredRun:
    """One run reduced to what the comparison needs: per combination, per case id, the
    mean of the metric over the case's repeats (cases without a value are left out)."""

    per_combination: dict[Combination, dict[str, float]] = field(default_factory=dict)

    def case_ids(self) -> set[str]:
        return {case for means in self.per_combination.values() for case in means}


def measure(
    combos: Sequence[ComboAggregate], cases: Iterable[CaseAggregate], metric: str
) -> MeasuredRun:
    """Reduce a run's aggregates (`cases` may stream) to per-case means of `metric`."""
    by_key = {c.combo_key: tuple(sorted(c.combination)) for c in combos}
    measured = MeasuredRun({combination: {} for combination in by_key.values()})
    for case in cases:
        combination = by_key.get(case.combo_key)
        value = case.metric_means.get(metric)
        if combination is None or value is None or not math.isfinite(value):
            continue
        measured.per_combination[combination][case.case_id] = value
    return measured


def _running(values: Iterable[float]) -> RunningMean:
    running = RunningMean()
    for value in values:
        running.add(value)
    return running


def _interval(running: RunningMean, method: str, confidence: float) -> Interval:
    estimate = running.estimate_by(method, confidence)
    return Interval(value=estimate.mean, low=estimate.low, high=estimate.high, n=estimate.n)


def _only(case_ids: set[str], combinations: Iterable[Combination]) -> OnlyIn:
    return OnlyIn(
        cases=len(case_ids),
        case_ids=sorted(case_ids)[:MAX_LISTED_CASES],
        combinations=sorted(combination_label(c) for c in combinations),
    )


def compare_measured(
    base: MeasuredRun,
    candidate: MeasuredRun,
    *,
    metric: str,
    higher_is_better: bool,
    base_run: ComparedRun,
    candidate_run: ComparedRun,
    alpha: float = 0.05,
    confidence: float = 0.95,
    changed_cases: Sequence[str] = (),
    unbounded: bool = False,
) -> RunComparison:
    """The comparison of two measured runs (pure). Raises WtbError when they share no
    combination, or no case with a value in a combination they share.

    Intervals are the matrix's for the metric (`interval_method` over the paired values of
    both runs: Wilson, the bounded score interval, or t; `unbounded` amounts always t), and
    so are the paired deltas (kept in [-1, 1] for a metric in [0, 1])."""
    common = [c for c in base.per_combination if c in candidate.per_combination]
    if not common:
        raise WtbError(
            "the runs have no combination in common: base has "
            f"{_labels(base.per_combination)}, candidate has "
            f"{_labels(candidate.per_combination)}",
            fix="compare runs of BatchTests over the same nodes and settings (matrix axes)",
        )
    paired = {
        c: sorted(base.per_combination[c].keys() & candidate.per_combination[c].keys())
        for c in common
    }
    runnings = {
        c: (
            _running(base.per_combination[c][k] for k in paired[c]),
            _running(candidate.per_combination[c][k] for k in paired[c]),
        )
        for c in common
    }
    method = interval_method((r for pair in runnings.values() for r in pair), unbounded=unbounded)
    deltas = {
        c: paired_delta(
            candidate.per_combination[c],
            base.per_combination[c],
            confidence,
            unit=method != STUDENT_T,
        )
        for c in common
    }
    if all(d.n == 0 for d in deltas.values()):
        raise WtbError(
            f"the runs have no case with a value of {metric!r} in common (by case id) in "
            "any combination they share",
            fix="compare runs over the same data set: cases are paired by their id",
        )
    decided = holm({c: d.p_value for c, d in deltas.items()}, alpha)
    rows = []
    for combination in common:
        a, b = base.per_combination[combination], candidate.per_combination[combination]
        d = deltas[combination]
        rows.append(
            RunDeltaRow(
                combination=dict(combination),
                label=combination_label(combination),
                base=_interval(runnings[combination][0], method, confidence),
                candidate=_interval(runnings[combination][1], method, confidence),
                delta=DeltaSummary(
                    mean=d.mean,
                    low=d.low,
                    high=d.high,
                    n=d.n,
                    p_value=d.p_value,
                    p_adjusted=decided[combination].p_adjusted,
                ),
                verdict=verdict(d, decided[combination].reject, higher_is_better),
                unpaired=len(a.keys() ^ b.keys()),
            )
        )
    rows.sort(key=lambda row: _best_first(row, higher_is_better))
    base_cases, candidate_cases = base.case_ids(), candidate.case_ids()
    return RunComparison(
        metric=metric,
        higher_is_better=higher_is_better,
        ci_method=method,
        confidence=confidence,
        alpha=alpha,
        base=base_run,
        candidate=candidate_run,
        paired_cases=len(base_cases & candidate_cases),
        only_in_base=_only(
            base_cases - candidate_cases,
            (c for c in base.per_combination if c not in candidate.per_combination),
        ),
        only_in_candidate=_only(
            candidate_cases - base_cases,
            (c for c in candidate.per_combination if c not in base.per_combination),
        ),
        changed_cases=_only(set(changed_cases), ()),
        rows=rows,
    )


def _labels(per_combination: Mapping[Combination, object]) -> str:
    return ", ".join(sorted(combination_label(c) for c in per_combination)) or "none"


def _best_first(row: RunDeltaRow, higher_is_better: bool) -> tuple[bool, float, str]:
    mean = row.delta.mean
    if mean is None:
        return (True, 0.0, row.label)
    return (False, -mean if higher_is_better else mean, row.label)


def _direction(side: RunSide, metric: str, role: str) -> bool:
    for evaluator in side.spec.evaluators:
        if evaluator.name == metric:
            return evaluator.direction_higher_is_better
    names = ", ".join(e.name for e in side.spec.evaluators)
    raise WtbError(
        f"the {role} run {side.run.run_key} has no metric {metric!r} (its metrics: {names})",
        fix="choose with --metric a metric both runs record",
    )


def _chosen_metric(base: RunSide, candidate: RunSide, metric: str | None) -> tuple[str, bool]:
    """The metric compared and whether higher is better; refuses what cannot be compared."""
    if metric is None:
        if base.spec.primary_metric != candidate.spec.primary_metric:
            shared = sorted(
                {e.name for e in base.spec.evaluators} & {e.name for e in candidate.spec.evaluators}
            )
            raise WtbError(
                "the runs have different primary metrics: "
                f"{base.spec.primary_metric!r} (base) and "
                f"{candidate.spec.primary_metric!r} (candidate)",
                fix="give both BatchTests the same primaryMetric"
                + (
                    f", or choose with --metric one both record: {', '.join(shared)}"
                    if shared
                    else ""
                ),
            )
        metric = base.spec.primary_metric
    base_direction = _direction(base, metric, "base")
    if _direction(candidate, metric, "candidate") != base_direction:
        raise WtbError(
            f"{metric!r} is higher-is-better in one run and lower-is-better in the other",
            fix="give the evaluator the same higherIsBetter in both BatchTests",
        )
    return metric, base_direction


def _changed(base: Sequence[Case], candidate: Sequence[Case]) -> list[str]:
    """Case ids in both whose inputs or expected values differ."""
    seen = {c.id: (c.inputs, c.expected) for c in base}
    return sorted(c.id for c in candidate if c.id in seen and seen[c.id] != (c.inputs, c.expected))


def _described(side: RunSide, measured: MeasuredRun) -> ComparedRun:
    run = side.run
    return ComparedRun(
        run=run.run_key,
        batch_test=f"{run.namespace}/{run.name}",
        status=run.status,
        created_at=run.created_at.isoformat(),
        cases=len(measured.case_ids()),
        combinations=len(measured.per_combination),
    )


def compare_stored_runs(
    store: ResultStore, base: RunSide, candidate: RunSide, *, metric: str | None = None
) -> RunComparison:
    """Compare two recorded runs on `metric` (default: their primary metric, which must
    then be the same) at the base run's alpha. Raises WtbError, naming the fix, when the
    runs cannot be compared."""
    name, higher_is_better = _chosen_metric(base, candidate, metric)
    measured = []
    for side in (base, candidate):
        measured.append(
            measure(
                store.combo_aggregates(side.run.id),
                store.case_aggregates(side.run.id, [name], name),
                name,
            )
        )
    return compare_measured(
        measured[0],
        measured[1],
        metric=name,
        higher_is_better=higher_is_better,
        base_run=_described(base, measured[0]),
        candidate_run=_described(candidate, measured[1]),
        alpha=base.spec.alpha,
        changed_cases=_changed(base.cases, candidate.cases),
        unbounded=base.spec.evaluator(name).type in UNBOUNDED_TYPES,
    )
