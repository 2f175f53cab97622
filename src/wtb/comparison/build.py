"""The comparison matrix: database aggregates in, one row of statistics per combination out.

The unit of analysis is the test case: the database averages repeats within a case, and
every interval and paired delta here is computed over per-case means. Pure code, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wtb.api.comparison import (
    ComparisonMatrix,
    DeltaSummary,
    Interval,
    LatencySummary,
    MatrixRow,
    NodeSummary,
    Verdict,
)
from wtb.comparison.stats import (
    BINARY,
    STUDENT_T,
    UNIT_SCORE,
    HolmResult,
    PairedDelta,
    RunningMean,
    holm,
    interval_method,
    paired_delta,
    wilson_interval,
)
from wtb.domain import CaseAggregate, Combination, ComboAggregate, NodeAggregate
from wtb.variant_matrix import combination_label

__all__ = ["MAX_ROW_NODES", "build_matrix", "verdict"]

MAX_ROW_NODES = 16
"""Nodes shown per matrix row, the slowest (the matrix goes into a resource's status)."""


@dataclass(slots=True)
class _ComboCases:
    """What one combination's case aggregates reduce to, kept while they stream past."""

    primary: dict[str, float] = field(default_factory=dict)
    """Per-case mean of the primary metric by case id: needed whole, for pairing."""
    metrics: dict[str, RunningMean] = field(default_factory=dict)
    repeated: int = 0
    """Cases with more than one run (the only ones whose outcome can vary)."""
    varying: int = 0


def _reduce_cases(
    cases: Iterable[CaseAggregate], combo_keys: set[str], metric_names: Sequence[str], primary: str
) -> dict[str, _ComboCases]:
    reduced = {
        key: _ComboCases(metrics={name: RunningMean() for name in metric_names})
        for key in combo_keys
    }
    for case in cases:
        # The case query may see cells recorded after the combination query ran; such
        # stragglers belong to the next matrix, not to a combination this one lacks.
        target = reduced.get(case.combo_key)
        if target is None:
            continue
        for name, running in target.metrics.items():
            value = case.metric_means.get(name)
            if value is None or not math.isfinite(value):
                continue
            running.add(value)
            if name == primary:
                target.primary[case.case_id] = value
        if case.runs > 1:
            target.repeated += 1
            if case.outcome_varies:
                target.varying += 1
    return reduced


def _interval_methods(
    reduced: Mapping[str, _ComboCases], names: Sequence[str], unbounded: Collection[str]
) -> dict[str, str]:
    """Per metric, the interval its rows get (`interval_method` over every row's values)."""
    return {
        name: interval_method(
            (summary.metrics[name] for summary in reduced.values()), unbounded=name in unbounded
        )
        for name in names
    }


def _dead(combo: ComboAggregate) -> bool:
    """Cells ran and none succeeded: nothing the row shows is evidence about the variant."""
    return combo.runs > 0 and combo.succeeded == 0


def _dead_baseline_warning(base: ComboAggregate) -> str:
    label = combination_label(base.combination)
    failed = base.runs - base.succeeded - base.interrupted
    how = f"{failed} failed" + (f", {base.interrupted} interrupted" if base.interrupted else "")
    return (
        f"the baseline {label} has no successful cell ({base.runs} run, {how}): "
        "every comparison with it is not comparable"
    )


def verdict(delta: PairedDelta, reject: bool, higher_is_better: bool) -> Verdict:
    """What a paired delta and its Holm decision say about a candidate (also across runs)."""
    if delta.p_value is None or delta.mean is None:
        return "insufficient data"
    if not reject:
        return "no significant difference"
    return "better" if (delta.mean > 0) == higher_is_better else "worse"


def _sort_key(
    row: MatrixRow, primary: str, higher_is_better: bool
) -> tuple[bool, bool, float, str]:
    """Best first; rows with no value after those with one, and rows whose cells all failed
    last of all, whatever their metric says (a failed cell may score 0, or nothing)."""
    dead = row.runs > 0 and row.succeeded == 0
    value = row.metrics[primary].value
    if value is None:
        return (dead, True, 0.0, row.label)
    return (dead, False, -value if higher_is_better else value, row.label)


def _bounded(rows: list[MatrixRow], max_rows: int | None) -> list[MatrixRow]:
    """The best rows, at most max_rows, always with the baseline (it replaces the last)."""
    if max_rows is None or len(rows) <= max_rows:
        return rows
    kept = rows[:max_rows]
    if any(row.baseline for row in kept):
        return kept
    return kept[:-1] + [row for row in rows if row.baseline]


def _row_nodes(nodes: Mapping[str, NodeAggregate] | None) -> dict[str, NodeSummary] | None:
    if not nodes:
        return None
    slowest = sorted(nodes.items(), key=lambda item: (-(item[1].ms_p50 or 0.0), item[0]))
    return {
        node: NodeSummary(ms_p50=a.ms_p50, calls=a.calls, tokens=a.tokens, cells=a.cells)
        for node, a in slowest[:MAX_ROW_NODES]
    }


def _row(
    combo: ComboAggregate,
    *,
    summary: _ComboCases,
    nodes: Mapping[str, NodeAggregate] | None,
    delta: PairedDelta | None,
    holm_result: HolmResult | None,
    higher_is_better: bool,
    confidence: float,
    methods: Mapping[str, str],
    comparable: bool,
) -> MatrixRow:
    """One combination's row; `delta` and `holm_result` are None for the baseline.
    `comparable` False: the row or the baseline has no successful cell."""
    rate = wilson_interval(combo.succeeded, combo.runs, confidence)
    row_metrics = {}
    for name, running in summary.metrics.items():
        estimate = running.estimate_by(methods[name], confidence)
        row_metrics[name] = Interval(
            value=estimate.mean, low=estimate.low, high=estimate.high, n=estimate.n
        )
    delta_summary: DeltaSummary | None = None
    row_verdict: Verdict = "baseline"
    if delta is not None and holm_result is not None:
        delta_summary = DeltaSummary(
            mean=delta.mean,
            low=delta.low,
            high=delta.high,
            n=delta.n,
            p_value=delta.p_value,
            p_adjusted=holm_result.p_adjusted,
        )
        row_verdict = verdict(delta, holm_result.reject, higher_is_better)
        if not comparable:
            delta_summary, row_verdict = None, "not comparable"
    return MatrixRow(
        combination=dict(combo.combination),
        label=combination_label(combo.combination),
        baseline=delta is None,
        runs=combo.runs,
        succeeded=combo.succeeded,
        interrupted=combo.interrupted,
        success_rate=Interval(
            value=combo.succeeded / combo.runs if combo.runs else None,
            low=rate[0] if rate else None,
            high=rate[1] if rate else None,
            n=combo.runs,
        ),
        latency_ms=LatencySummary(p50=combo.latency_p50, p95=combo.latency_p95),
        tokens=combo.tokens,
        cost=combo.cost,
        metrics=row_metrics,
        evaluator_errors={name: combo.evaluator_errors.get(name, 0) for name in row_metrics},
        delta=delta_summary,
        verdict=row_verdict,
        flakiness=summary.varying / summary.repeated if summary.repeated else None,
        nodes=_row_nodes(nodes),
    )


def build_matrix(
    *,
    combos: Sequence[ComboAggregate],
    cases: Iterable[CaseAggregate],
    metrics: Sequence[tuple[str, bool]],
    primary_metric: str,
    baseline: Combination,
    alpha: float = 0.05,
    confidence: float = 0.95,
    max_rows: int | None = None,
    fixed: Mapping[str, str] | None = None,
    nodes: Mapping[str, Mapping[str, NodeAggregate]] | None = None,
    unbounded: Collection[str] = (),
) -> ComparisonMatrix:
    """The comparison matrix of a batch, from the database's aggregates.

    `metrics` lists (name, higher_is_better) in display order; `cases` is consumed once and
    may stream. A baseline combination with no recorded cell still gets a row (zero runs),
    and every other row is then "insufficient data". A combination whose cells all failed
    (or were interrupted) is "not comparable", and when that is the baseline, so is every
    row, and the matrix says so in `warnings`; such rows are tested in no Holm family and
    sorted last. Rows are sorted best first by the
    primary metric; `max_rows` bounds them (keeping the baseline), `combinations` counts all.
    `fixed` (the nodes replaced in every cell) is shown once, beside the rows. `nodes`
    (per combo_key, per node) gives each row its node figures. Metrics named in
    `unbounded` (amounts such as cost) get t intervals even when their values lie in [0, 1].
    """
    directions = dict(metrics)
    if primary_metric not in directions:
        raise ValueError(
            f"primary metric {primary_metric!r} is not among the metrics {list(directions)}"
        )
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    higher_is_better = directions[primary_metric]
    baseline_combination = tuple(sorted(baseline))
    base = next((c for c in combos if tuple(sorted(c.combination)) == baseline_combination), None)
    if base is None:
        base = ComboAggregate(
            combo_key="",
            combination=baseline_combination,
            runs=0,
            succeeded=0,
            tokens=None,
            cost=None,
            latency_p50=None,
            latency_p95=None,
        )
        combos = [*combos, base]
    reduced = _reduce_cases(cases, {c.combo_key for c in combos}, list(directions), primary_metric)
    methods = _interval_methods(reduced, list(directions), unbounded)
    unit = methods[primary_metric] != STUDENT_T
    comparable = {c.combo_key: not (_dead(c) or _dead(base)) for c in combos}

    baseline_primary = reduced[base.combo_key].primary
    deltas = {
        c.combo_key: paired_delta(
            reduced[c.combo_key].primary, baseline_primary, confidence, unit=unit
        )
        for c in combos
        if c is not base
    }
    # Rows that are not comparable are not tested, so they do not count in Holm's m.
    corrected = holm(
        {key: d.p_value if comparable[key] else None for key, d in deltas.items()}, alpha
    )
    rows = [
        _row(
            combo,
            summary=reduced[combo.combo_key],
            nodes=(nodes or {}).get(combo.combo_key),
            delta=deltas.get(combo.combo_key),
            holm_result=corrected.get(combo.combo_key),
            higher_is_better=higher_is_better,
            confidence=confidence,
            methods=methods,
            comparable=comparable[combo.combo_key],
        )
        for combo in combos
    ]
    rows.sort(key=lambda row: _sort_key(row, primary_metric, higher_is_better))
    ci_methods = {
        **methods,
        "successRate": BINARY,
        "delta": UNIT_SCORE if unit else STUDENT_T,
    }
    return ComparisonMatrix(
        primary_metric=primary_metric,
        higher_is_better=higher_is_better,
        baseline=combination_label(baseline_combination),
        confidence=confidence,
        alpha=alpha,
        ci_method=", ".join(sorted(set(ci_methods.values()))),
        ci_methods=ci_methods,
        warnings=[_dead_baseline_warning(base)] if _dead(base) else [],
        combinations=len(combos),
        fixed=dict(fixed) if fixed else None,
        rows=_bounded(rows, max_rows),
    )
