"""One stored run case by case: what each combination did on each case, and what changed
against the baseline (flips), which cases are flaky, which evaluators raised.

The matrix (`wtb.comparison.build`) says *whether* a combination differs from the baseline;
this read model says *where*: the cases that a candidate newly fails or newly passes. It
streams the run's cells once and keeps, per (combination, case), a few counters and the
cell of one representative repeat (the lowest-numbered). Pure code over `StoredCell`s;
`case_comparison_for_run` reads them from a store. docs/statistics.md defines "passes".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from wtb.domain import Combination
from wtb.variant_matrix import combination_label, combo_key

if TYPE_CHECKING:
    from wtb.api.batchtest import BatchTestSpec
    from wtb.storage.records import StoredCell
    from wtb.storage.store import ResultStore

__all__ = [
    "BINARY_PASS",
    "SCORE_PASS",
    "CaseComparison",
    "CaseOutcome",
    "CaseRow",
    "ComboSummary",
    "Flip",
    "case_comparison",
    "case_comparison_for_run",
]

Flip = Literal["newly failing", "newly passing"]

BINARY_PASS = 1.0
"""A binary primary metric (every recorded value 0 or 1) passes at its best value."""
SCORE_PASS = 0.5
"""Any other higher-is-better primary metric passes from this mean on."""


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    """One combination on one case, over its repeats."""

    runs: int
    succeeded: int
    failed: int
    interrupted: int
    primary: float | None
    """Mean of the primary metric over the repeats with a value (None: none has one)."""
    scored: int
    """Repeats with a value of the primary metric."""
    passes: bool
    flaky: bool
    """Repeats disagree: their statuses differ, or their primary values, or only some have one."""
    evaluator_errors: dict[str, int]
    """Per metric: repeats whose evaluator raised (their value is missing)."""
    evaluator_messages: dict[str, str]
    """Per metric: the first recorded evaluator error, 'ErrorClass: message'."""
    repeat: int
    """The representative repeat: the lowest-numbered one recorded."""
    cell_key: str
    status: str
    """The representative repeat's status."""
    output: dict[str, Any] | None
    """The representative repeat's output (None when it failed)."""
    error: str | None
    """The representative repeat's error, 'ErrorClass: message', when it did not succeed."""


@dataclass(frozen=True, slots=True)
class CaseRow:
    """One case: the baseline's outcome, each candidate's, and the flips between them."""

    case_id: str
    baseline: CaseOutcome | None
    candidates: dict[str, CaseOutcome]
    """By combo_key, the combinations other than the baseline that ran the case."""
    flips: dict[str, Flip]
    """By combo_key: candidates whose pass/fail differs from the baseline's on this case."""

    @property
    def flaky(self) -> bool:
        """Whether the repeats of any combination (the baseline's included) disagree."""
        return any(o.flaky for o in self.outcomes())

    def outcomes(self) -> list[CaseOutcome]:
        """The baseline's outcome (when it ran the case), then each candidate's."""
        return ([self.baseline] if self.baseline else []) + list(self.candidates.values())


@dataclass(frozen=True, slots=True)
class ComboSummary:
    """One combination's case-level counts."""

    combo_key: str
    label: str
    baseline: bool
    cases: int
    passing: int
    newly_failing: int
    newly_passing: int
    flaky: int
    evaluator_errors: int
    """Cells of the combination whose evaluator (any metric) raised."""


@dataclass(frozen=True, slots=True)
class CaseComparison:
    """A run case by case. `combinations` is in matrix order: the baseline first."""

    primary_metric: str
    higher_is_better: bool
    binary: bool
    """Every recorded value of the primary metric is 0 or 1."""
    pass_threshold: float | None
    """The primary mean from which a case passes; None for a lower-is-better metric."""
    baseline_key: str
    labels: dict[str, str]
    """combo_key -> label, the baseline first, then the candidates by label."""
    rows: list[CaseRow]
    """Every case that ran, by case id."""
    summaries: dict[str, ComboSummary] = field(default_factory=dict)

    @property
    def candidates(self) -> list[str]:
        return [key for key in self.labels if key != self.baseline_key]

    def flipped(self) -> list[CaseRow]:
        """The cases some candidate flipped against the baseline."""
        return [row for row in self.rows if row.flips]

    def outcome(self, row: CaseRow, key: str) -> CaseOutcome | None:
        return row.baseline if key == self.baseline_key else row.candidates.get(key)

    def pass_rule(self) -> str:
        """How "passes" was decided, in words (for captions)."""
        if self.pass_threshold is None:
            return "passes: every repeat succeeded with a value of " + self.primary_metric
        level = (
            f"{self.primary_metric} = 1 in every repeat"
            if self.binary
            else f"mean {self.primary_metric} >= {self.pass_threshold:g}"
        )
        return f"passes: every repeat succeeded and {level}"


@dataclass(slots=True)
class _Running:
    """One (combination, case) while its cells stream past."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    interrupted: int = 0
    values: list[float] = field(default_factory=list)
    statuses: set[str] = field(default_factory=set)
    errors: dict[str, int] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    first: StoredCell | None = None

    def add(self, cell: StoredCell, primary: str) -> None:
        self.runs += 1
        self.statuses.add(cell.status)
        if cell.status == "succeeded":
            self.succeeded += 1
        elif cell.status == "interrupted":
            self.interrupted += 1
        else:
            self.failed += 1
        value = cell.metrics.get(primary)
        if value is not None and math.isfinite(value):
            self.values.append(float(value))
        for name, message in cell.evaluator_errors.items():
            self.errors[name] = self.errors.get(name, 0) + 1
            self.messages.setdefault(name, message)
        if self.first is None or cell.repeat < self.first.repeat:
            self.first = cell


def _passes(running: _Running, threshold: float | None) -> bool:
    if running.succeeded != running.runs or len(running.values) != running.runs:
        return False
    if threshold is None:
        return True
    mean = sum(running.values) / len(running.values)
    return mean >= threshold - 1e-12


def _varies(running: _Running) -> bool:
    if running.runs < 2:
        return False
    if len(running.statuses) > 1:
        return True
    values = running.values
    if values and len(values) < running.runs:
        return True
    return bool(values) and max(values) - min(values) > 1e-12 * max(1.0, *map(abs, values))


def _outcome(running: _Running, threshold: float | None) -> CaseOutcome:
    first = running.first
    assert first is not None
    error = None
    if first.status != "succeeded":
        error = (
            f"{first.error_type}: {first.error_message}"
            if first.error_type
            else (first.error_message or first.status)
        )
    values = running.values
    return CaseOutcome(
        runs=running.runs,
        succeeded=running.succeeded,
        failed=running.failed,
        interrupted=running.interrupted,
        primary=sum(values) / len(values) if values else None,
        scored=len(values),
        passes=_passes(running, threshold),
        flaky=_varies(running),
        evaluator_errors=dict(running.errors),
        evaluator_messages=dict(running.messages),
        repeat=first.repeat,
        cell_key=first.cell_key,
        status=first.status,
        output=first.output,
        error=error,
    )


def _flip(baseline: CaseOutcome | None, candidate: CaseOutcome) -> Flip | None:
    if baseline is None or baseline.passes == candidate.passes:
        return None
    return "newly failing" if baseline.passes else "newly passing"


def case_comparison(
    cells: Iterable[StoredCell],
    *,
    primary_metric: str,
    higher_is_better: bool,
    baseline: Combination,
    combinations: Sequence[Combination] = (),
) -> CaseComparison:
    """The run case by case, from its cells (consumed once; they may stream).

    `combinations` lists the run's combinations, so that one with no recorded cell still
    has a column; combinations seen only in `cells` are added.
    """
    baseline_key = combo_key(baseline)
    labels: dict[str, str] = {key: label for key, label in _labelled(combinations)}
    labels.setdefault(baseline_key, combination_label(baseline))
    running: dict[tuple[str, str], _Running] = {}
    binary = True
    for cell in cells:
        labels.setdefault(cell.combo_key, combination_label(cell.combination))
        target = running.setdefault((cell.case_id, cell.combo_key), _Running())
        target.add(cell, primary_metric)
        value = cell.metrics.get(primary_metric)
        if value is not None and value not in (0.0, 1.0):
            binary = False
    threshold = None
    if higher_is_better:
        threshold = BINARY_PASS if binary else SCORE_PASS
    ordered = {baseline_key: labels[baseline_key]} | dict(
        sorted(((k, v) for k, v in labels.items() if k != baseline_key), key=lambda item: item[1])
    )
    by_case: dict[str, dict[str, CaseOutcome]] = {}
    for (case_id, key), state in running.items():
        by_case.setdefault(case_id, {})[key] = _outcome(state, threshold)
    rows = []
    for case_id in sorted(by_case, key=_case_order):
        outcomes = by_case[case_id]
        base = outcomes.get(baseline_key)
        candidates = {k: outcomes[k] for k in ordered if k != baseline_key and k in outcomes}
        flips = {k: f for k, o in candidates.items() if (f := _flip(base, o)) is not None}
        rows.append(CaseRow(case_id, base, candidates, flips))
    comparison = CaseComparison(
        primary_metric=primary_metric,
        higher_is_better=higher_is_better,
        binary=binary,
        pass_threshold=threshold,
        baseline_key=baseline_key,
        labels=ordered,
        rows=rows,
    )
    comparison.summaries.update(_summaries(comparison))
    return comparison


def _labelled(combinations: Sequence[Combination]) -> Iterable[tuple[str, str]]:
    for combination in combinations:
        yield combo_key(combination), combination_label(combination)


def _case_order(case_id: str) -> tuple[str, ...]:
    """Case ids in natural order: q2 before q10."""
    import re

    return tuple(part.zfill(12) if part.isdigit() else part for part in re.split(r"(\d+)", case_id))


def _summaries(comparison: CaseComparison) -> Mapping[str, ComboSummary]:
    found = {}
    for key, label in comparison.labels.items():
        outcomes = [o for row in comparison.rows if (o := comparison.outcome(row, key))]
        flips = [row.flips.get(key) for row in comparison.rows]
        found[key] = ComboSummary(
            combo_key=key,
            label=label,
            baseline=key == comparison.baseline_key,
            cases=len(outcomes),
            passing=sum(o.passes for o in outcomes),
            newly_failing=flips.count("newly failing"),
            newly_passing=flips.count("newly passing"),
            flaky=sum(o.flaky for o in outcomes),
            evaluator_errors=sum(sum(o.evaluator_errors.values()) for o in outcomes),
        )
    return found


def case_comparison_for_run(
    store: ResultStore,
    run_id: int,
    spec: BatchTestSpec,
    baseline: Combination,
    combinations: Sequence[Combination] = (),
) -> CaseComparison:
    """The stored run `run_id` case by case (its cells streamed from the store)."""
    return case_comparison(
        store.iter_cells(run_id),
        primary_metric=spec.primary_metric,
        higher_is_better=spec.evaluator(spec.primary_metric).direction_higher_is_better,
        baseline=baseline,
        combinations=combinations,
    )
