"""What fails a run for a CI: `wtb run --fail-on`, as pure functions over the matrix.

A gate is `failed` (a cell failed or was interrupted), `worse` (a combination is
significantly worse than the baseline, Holm-adjusted), or a threshold on a metric's mean
(`accuracy<0.8`: a combination's mean below 0.8; `latency>2000`: above). `never` turns
every gate off. The default is `failed`: a run whose cells failed is not a success.

A baseline with no successful cell fails every gate but `never`: nothing can be compared
with it, so no verdict or threshold of the run can be trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from wtb.api.comparison import ComparisonMatrix
from wtb.errors import ExitCode

__all__ = [
    "DEFAULT_FAIL_ON",
    "Breach",
    "FailOn",
    "Threshold",
    "breaches",
    "exit_code",
    "parse_fail_on",
    "unknown_metrics",
]

DEFAULT_FAIL_ON = ("failed",)

_THRESHOLD = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*([<>])\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True)
class Threshold:
    """`metric<value`: a combination's mean below value fails; `metric>value`: above."""

    metric: str
    op: Literal["<", ">"]
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def breached_by(self, mean: float | None) -> bool:
        """A mean on the failing side, or no mean at all (nothing shows it passes)."""
        if mean is None:
            return True
        return mean < self.value if self.op == "<" else mean > self.value


@dataclass(frozen=True)
class FailOn:
    """The gates of a run; all off is `never`."""

    failed: bool = True
    worse: bool = False
    thresholds: tuple[Threshold, ...] = ()

    @property
    def never(self) -> bool:
        return not (self.failed or self.worse or self.thresholds)


def parse_fail_on(values: Iterable[str]) -> FailOn:
    """The gates named by --fail-on values (each comma-separated); ValueError names a bad one.
    `never` stands alone."""
    items = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not items:
        raise ValueError("give at least one of: failed, worse, METRIC<X, METRIC>X, never")
    if "never" in items:
        if len(items) > 1:
            raise ValueError("never cannot be combined with other gates")
        return FailOn(failed=False)
    failed = worse = False
    thresholds: list[Threshold] = []
    for item in items:
        if item == "failed":
            failed = True
        elif item == "worse":
            worse = True
        elif match := _THRESHOLD.match(item):
            name, op, number = match.groups()
            try:
                value = float(number)
            except ValueError:
                raise ValueError(f"{item!r}: {number!r} is not a number") from None
            thresholds.append(Threshold(name, "<" if op == "<" else ">", value))
        else:
            raise ValueError(
                f"{item!r} is not a gate; use failed, worse, a metric threshold such as "
                "accuracy<0.8 or latency>2000, or never"
            )
    return FailOn(failed=failed, worse=worse, thresholds=tuple(dict.fromkeys(thresholds)))


def unknown_metrics(fail_on: FailOn, metrics: Sequence[str]) -> list[Threshold]:
    """The thresholds on a metric the BatchTest has no evaluator for."""
    return [t for t in fail_on.thresholds if t.metric not in metrics]


@dataclass(frozen=True)
class Breach:
    """A gate the run failed: the exit code it calls for and what to tell the user."""

    code: ExitCode
    message: str


def breaches(
    fail_on: FailOn, matrix: ComparisonMatrix, *, failed: int, interrupted: int, total: int
) -> list[Breach]:
    """Every gate `matrix` (and the run's counts of failed and interrupted cells) fails."""
    if fail_on.never:
        return []
    found: list[Breach] = []
    base = next((row for row in matrix.rows if row.baseline), None)
    if base is not None and base.runs and not base.succeeded:
        found.append(
            Breach(
                ExitCode.CELLS_FAILED,
                f"the baseline {base.label} has no successful cell: no comparison holds",
            )
        )
    if fail_on.failed and (failed or interrupted):
        parts = [f"{failed} of {total} cells failed"]
        if interrupted:
            parts.append(f"{interrupted} interrupted (stopped at interrupt() waiting for a human)")
        found.append(Breach(ExitCode.CELLS_FAILED, "--fail-on failed: " + ", ".join(parts)))
    if fail_on.worse:
        worse = [row.label for row in matrix.rows if row.verdict == "worse"]
        if worse:
            found.append(
                Breach(
                    ExitCode.GATE,
                    "--fail-on worse: significantly worse than the baseline (Holm-adjusted): "
                    + "; ".join(worse),
                )
            )
    for threshold in fail_on.thresholds:
        below = []
        for row in matrix.rows:
            interval = row.metrics.get(threshold.metric)
            mean = interval.value if interval is not None else None
            if threshold.breached_by(mean):
                below.append(f"{row.label} ({'no value' if mean is None else f'{mean:.3g}'})")
        if below:
            side = "below" if threshold.op == "<" else "above"
            found.append(
                Breach(
                    ExitCode.GATE,
                    f"--fail-on {threshold}: {threshold.metric} mean {side} "
                    f"{threshold.value:g}: " + "; ".join(below),
                )
            )
    return found


def exit_code(found: Sequence[Breach]) -> ExitCode:
    """OK when no gate failed; failed cells (4) before verdicts and thresholds (1)."""
    if not found:
        return ExitCode.OK
    return (
        ExitCode.CELLS_FAILED
        if any(b.code == ExitCode.CELLS_FAILED for b in found)
        else ExitCode.GATE
    )
