"""`--fail-on` as pure functions: parsing, and the exit code a set of breaches calls for."""

from __future__ import annotations

import pytest

from wtb.api.comparison import ComparisonMatrix, Interval, LatencySummary, MatrixRow
from wtb.comparison.gates import FailOn, Threshold, breaches, exit_code, parse_fail_on
from wtb.errors import ExitCode


def test_parsing_gates() -> None:
    assert parse_fail_on(["failed"]) == FailOn()
    assert parse_fail_on(["never"]).never
    assert parse_fail_on(["worse, correct<0.8", "latency>2000"]) == FailOn(
        failed=False,
        worse=True,
        thresholds=(Threshold("correct", "<", 0.8), Threshold("latency", ">", 2000.0)),
    )
    for bad, says in [
        ("", "at least one"),
        ("never,worse", "never cannot be combined"),
        ("correct<=0.8", "not a gate"),
        ("correct<1.2.3", "not a number"),
        ("sometimes", "not a gate"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_fail_on([bad])


def _matrix(*, base_succeeded: int, value: float | None) -> ComparisonMatrix:
    def row(label: str, succeeded: int, baseline: bool, verdict: str) -> MatrixRow:
        return MatrixRow.model_validate(
            {
                "combination": {"a": label},
                "label": f"a={label}",
                "baseline": baseline,
                "runs": 4,
                "succeeded": succeeded,
                "successRate": Interval(value=succeeded / 4, n=4),
                "latencyMs": LatencySummary(),
                "metrics": {"correct": Interval(value=value, n=4 if value is not None else 0)},
                "verdict": verdict,
            }
        )

    return ComparisonMatrix(
        primary_metric="correct",
        higher_is_better=True,
        baseline="a=base",
        combinations=2,
        rows=[
            row("new", 4, False, "worse"),
            row("base", base_succeeded, True, "baseline"),
        ],
    )


def test_failed_cells_win_over_verdict_gates() -> None:
    every = parse_fail_on(["failed,worse,correct<0.8"])
    found = breaches(every, _matrix(base_succeeded=4, value=0.5), failed=1, interrupted=0, total=8)
    assert [b.code for b in found] == [
        ExitCode.CELLS_FAILED,
        ExitCode.GATE,
        ExitCode.GATE,
    ]
    assert exit_code(found) == ExitCode.CELLS_FAILED
    verdicts_only = breaches(
        parse_fail_on(["worse"]),
        _matrix(base_succeeded=4, value=0.9),
        failed=0,
        interrupted=0,
        total=8,
    )
    assert exit_code(verdicts_only) == ExitCode.GATE
    assert exit_code([]) == ExitCode.OK


def test_interrupted_cells_count_against_the_failed_gate() -> None:
    (breach,) = breaches(
        FailOn(), _matrix(base_succeeded=4, value=1.0), failed=0, interrupted=2, total=8
    )
    assert breach.code == ExitCode.CELLS_FAILED
    assert "0 of 8 cells failed, 2 interrupted" in breach.message


def test_a_dead_baseline_fails_every_gate_but_never() -> None:
    dead = _matrix(base_succeeded=0, value=1.0)
    thresholds_only = parse_fail_on(["correct<0.5"])
    (breach,) = breaches(thresholds_only, dead, failed=4, interrupted=0, total=8)
    assert breach.code == ExitCode.CELLS_FAILED
    assert "baseline a=base has no successful cell" in breach.message
    assert breaches(parse_fail_on(["never"]), dead, failed=4, interrupted=0, total=8) == []


def test_a_threshold_without_a_value_fails() -> None:
    (breach,) = breaches(
        parse_fail_on(["correct<0.1"]),
        _matrix(base_succeeded=4, value=None),
        failed=0,
        interrupted=0,
        total=8,
    )
    assert "a=new (no value); a=base (no value)" in breach.message
