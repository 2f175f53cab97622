"""The comparison matrix, built from hand-made aggregates and checked against scipy."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats as sps  # type: ignore[import-untyped]

from wtb.api.comparison import ComparisonMatrix, MatrixRow
from wtb.comparison.build import build_matrix
from wtb.domain import CaseAggregate, Combination, ComboAggregate
from wtb.variant_matrix import combination_label

BASELINE: Combination = (("generate", "original"), ("retrieve", "original"))
BETTER: Combination = (("generate", "long"), ("retrieve", "original"))
SAME: Combination = (("generate", "original"), ("retrieve", "bm25"))
METRICS = [("accuracy", True), ("latency", False)]
N_CASES = 30


def _combo(
    key: str, combination: Combination, runs: int = 90, succeeded: int = 85
) -> ComboAggregate:
    return ComboAggregate(
        combo_key=key,
        combination=combination,
        runs=runs,
        succeeded=succeeded,
        tokens=1000,
        cost=0.5,
        latency_p50=120.0,
        latency_p95=300.0,
    )


def _scenario() -> dict[str, dict[str, tuple[float, float]]]:
    """Per combo key, per case id: (accuracy, latency), from a seeded RNG.

    `better` scores 0.2 above the baseline on every case (with noise) and is slower;
    `same` is the baseline plus noise.
    """
    rng = random.Random(2024)
    base = {f"case-{i:02d}": rng.uniform(0.3, 0.7) for i in range(N_CASES)}
    return {
        "b": {c: (v, rng.uniform(100, 200)) for c, v in base.items()},
        "x": {c: (v + 0.2 + rng.gauss(0, 0.05), rng.uniform(300, 400)) for c, v in base.items()},
        "s": {c: (v + rng.gauss(0, 0.05), rng.uniform(100, 200)) for c, v in base.items()},
    }


def _cases(
    values: dict[str, dict[str, tuple[float, float]]],
    *,
    runs: int = 3,
    varies: frozenset[str] = frozenset(),
) -> Iterator[CaseAggregate]:
    """A one-pass stream, as the database hands it over."""
    for key, per_case in values.items():
        for case_id, (accuracy, latency) in per_case.items():
            yield CaseAggregate(
                combo_key=key,
                case_id=case_id,
                runs=runs,
                succeeded=runs,
                metric_means={"accuracy": accuracy, "latency": latency},
                outcome_varies=f"{key}/{case_id}" in varies,
            )


def _build(**over: object) -> ComparisonMatrix:
    values = _scenario()
    arguments: dict[str, object] = {
        "combos": [_combo("b", BASELINE), _combo("x", BETTER), _combo("s", SAME, 90, 90)],
        "cases": _cases(values),
        "metrics": METRICS,
        "primary_metric": "accuracy",
        "baseline": BASELINE,
    }
    arguments.update(over)
    return build_matrix(**arguments)  # type: ignore[arg-type]


def _row(matrix: ComparisonMatrix, label: str) -> MatrixRow:
    return next(row for row in matrix.rows if row.label == label)


def test_labels_write_every_node_in_node_order() -> None:
    assert combination_label(BASELINE) == "generate=original, retrieve=original"
    assert combination_label((("z", "a"), ("b", "c"))) == "b=c, z=a"


def test_rows_order_verdicts_and_header() -> None:
    matrix = _build()
    assert matrix.combinations == 3
    assert matrix.primary_metric == "accuracy"
    assert matrix.higher_is_better is True
    assert matrix.baseline == "generate=original, retrieve=original"
    values = _scenario()
    means = {
        key: float(np.mean([a for a, _ in per_case.values()])) for key, per_case in values.items()
    }
    expected_order = sorted(means, key=lambda key: -means[key])
    labels = {
        "b": combination_label(BASELINE),
        "x": combination_label(BETTER),
        "s": combination_label(SAME),
    }
    assert [row.label for row in matrix.rows] == [labels[k] for k in expected_order]
    assert matrix.rows[0].label == labels["x"]
    verdicts = {row.label: row.verdict for row in matrix.rows}
    assert verdicts == {
        labels["b"]: "baseline",
        labels["x"]: "better",
        labels["s"]: "no significant difference",
    }
    assert [row.baseline for row in matrix.rows].count(True) == 1
    assert _row(matrix, labels["b"]).delta is None
    assert _row(matrix, labels["x"]).combination == {"generate": "long", "retrieve": "original"}


def _score_reference(
    sample: list[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """The bounded score interval by its definition: the p in [0, 1] with
    (mean - p)^2 = q^2 phi p (1 - p) / n, phi = s^2 / (mean (1 - mean)), as a quadratic."""
    values = np.asarray(sample, dtype=float)
    n, mean, variance = len(values), float(values.mean()), float(values.var(ddof=1))
    q = float(sps.t.ppf(0.5 + confidence / 2, n - 1))
    k = q * q * variance / (mean * (1 - mean)) / n
    roots = np.roots([1 + k, -(2 * mean + k), mean * mean])
    return float(min(roots.real)), float(max(roots.real))


def test_metric_intervals_deltas_and_holm_match_scipy() -> None:
    matrix = _build()
    assert matrix.ci_methods == {
        "accuracy": "score",
        "latency": "t",
        "successRate": "wilson",
        "delta": "score",
    }
    assert matrix.ci_method == "score, t, wilson"
    values = _scenario()
    base_acc = [values["b"][c][0] for c in sorted(values["b"])]
    p_values = {}
    for key, combination in [("x", BETTER), ("s", SAME)]:
        row = _row(matrix, combination_label(combination))
        accuracy = [values[key][c][0] for c in sorted(values[key])]
        latency = [values[key][c][1] for c in sorted(values[key])]
        # Accuracy lies in [0, 1]: the bounded score interval; latency does not: t.
        low, high = sps.t.interval(0.95, N_CASES - 1, loc=np.mean(latency), scale=sps.sem(latency))
        for name, sample, expected in [
            ("accuracy", accuracy, _score_reference(accuracy)),
            ("latency", latency, (low, high)),
        ]:
            interval = row.metrics[name]
            assert interval.n == N_CASES
            assert interval.value == pytest.approx(float(np.mean(sample)), rel=1e-12)
            assert (interval.low, interval.high) == pytest.approx(expected, rel=1e-9)
        # Far from the bounds, the score interval is close to the t interval.
        t_low, t_high = sps.t.interval(
            0.95, N_CASES - 1, loc=np.mean(accuracy), scale=sps.sem(accuracy)
        )
        accuracy_ci = row.metrics["accuracy"]
        assert (accuracy_ci.low, accuracy_ci.high) == pytest.approx((t_low, t_high), abs=0.01)
        diffs = np.subtract(accuracy, base_acc)
        d_low, d_high = _score_reference((diffs + 1) / 2)
        assert row.delta is not None
        assert row.delta.n == N_CASES
        assert row.delta.mean == pytest.approx(float(diffs.mean()), rel=1e-9)
        assert (row.delta.low, row.delta.high) == pytest.approx(
            (2 * d_low - 1, 2 * d_high - 1), rel=1e-9
        )
        p_values[key] = float(sps.ttest_rel(accuracy, base_acc).pvalue)
        assert row.delta.p_value == pytest.approx(p_values[key], rel=1e-8)
    # Holm over the two non-baseline rows, by hand: "x" has by far the smaller p-value, so
    # it is doubled, and "s" (the larger) keeps its own, which exceeds 2 * p_x.
    assert p_values["x"] < 1e-10
    assert p_values["s"] > 0.05
    x_delta = _row(matrix, combination_label(BETTER)).delta
    s_delta = _row(matrix, combination_label(SAME)).delta
    assert x_delta is not None
    assert s_delta is not None
    assert x_delta.p_adjusted == pytest.approx(2 * p_values["x"], rel=1e-8)
    assert s_delta.p_adjusted == pytest.approx(p_values["s"], rel=1e-8)


def test_success_rate_is_a_wilson_interval_and_aggregates_pass_through() -> None:
    row = _row(_build(), combination_label(BETTER))
    ci = sps.binomtest(85, 90).proportion_ci(confidence_level=0.95, method="wilson")
    assert row.runs == 90
    assert row.succeeded == 85
    assert row.success_rate.value == pytest.approx(85 / 90)
    assert (row.success_rate.low, row.success_rate.high) == pytest.approx(
        (ci.low, ci.high), abs=1e-12
    )
    assert row.success_rate.n == 90
    assert (row.latency_ms.p50, row.latency_ms.p95) == (120.0, 300.0)
    assert (row.tokens, row.cost) == (1000, 0.5)


def test_lower_is_better_primary_metric_flips_order_and_verdict() -> None:
    matrix = _build(primary_metric="latency")
    assert matrix.higher_is_better is False
    assert matrix.rows[-1].label == combination_label(BETTER)  # the slowest is last
    assert _row(matrix, combination_label(BETTER)).verdict == "worse"
    delta = _row(matrix, combination_label(BETTER)).delta
    assert delta is not None
    assert delta.mean is not None
    assert delta.mean > 100


def test_flakiness_is_the_share_of_repeated_cases_that_vary() -> None:
    values = _scenario()
    varies = frozenset({f"x/case-{i:02d}" for i in range(6)} | {"s/case-00"})
    matrix = _build(cases=_cases(values, varies=varies))
    assert _row(matrix, combination_label(BETTER)).flakiness == pytest.approx(6 / N_CASES)
    assert _row(matrix, combination_label(SAME)).flakiness == pytest.approx(1 / N_CASES)
    assert _row(matrix, combination_label(BASELINE)).flakiness == 0.0
    single = _build(cases=_cases(values, runs=1))
    assert all(row.flakiness is None for row in single.rows)


def test_max_rows_keeps_the_best_and_always_the_baseline() -> None:
    labels = [combination_label(c) for c in (BETTER, BASELINE, SAME)]
    # Baseline ranks second here: bounding to two rows keeps the top two as they are.
    assert [row.label for row in _build().rows] == labels
    two = _build(max_rows=2)
    assert two.combinations == 3
    assert [row.label for row in two.rows] == labels[:2]
    # One row: the baseline takes the only place, however it ranks.
    assert [row.label for row in _build(max_rows=1).rows] == [labels[1]]
    assert len(_build(max_rows=10).rows) == 3

    # Baseline ranks last: it replaces the last of the best rows.
    values = _scenario()
    values["b"] = {c: (accuracy - 0.3, latency) for c, (accuracy, latency) in values["b"].items()}
    worst_baseline = _build(cases=_cases(values))
    assert [row.label for row in worst_baseline.rows] == [labels[0], labels[2], labels[1]]
    bounded = _build(cases=_cases(values), max_rows=2)
    assert [row.label for row in bounded.rows] == [labels[0], labels[1]]
    assert bounded.rows[1].baseline
    assert bounded.combinations == 3
    with pytest.raises(ValueError, match="max_rows"):
        _build(max_rows=0)


def test_missing_baseline_cells_make_every_comparison_insufficient() -> None:
    values = _scenario()
    del values["b"]
    matrix = _build(combos=[_combo("x", BETTER), _combo("s", SAME)], cases=_cases(values))
    assert matrix.combinations == 3
    base = _row(matrix, combination_label(BASELINE))
    assert base.baseline
    assert base.verdict == "baseline"
    assert (base.runs, base.success_rate.value, base.success_rate.low) == (0, None, None)
    assert base.metrics["accuracy"].n == 0
    assert base.metrics["accuracy"].value is None
    assert matrix.rows[-1] is base  # no value: last
    for combination in (BETTER, SAME):
        row = _row(matrix, combination_label(combination))
        assert row.verdict == "insufficient data"
        assert row.delta is not None
        assert (row.delta.n, row.delta.p_value, row.delta.p_adjusted) == (0, None, None)


def test_all_failed_and_partial_data_are_reported_honestly() -> None:
    values = _scenario()
    cases = list(_cases(values))
    # "s" has a value on two cases only (its other cells failed) and all its runs failed...
    kept = [c for c in cases if c.combo_key != "s"]
    for case_id in ("case-00", "case-01"):
        kept.append(CaseAggregate("s", case_id, 3, 0, {"accuracy": 0.5, "latency": None}, False))
    kept.append(CaseAggregate("s", "case-02", 3, 0, {"accuracy": None, "latency": None}, False))
    # ...and a straggler from a combination the combination query did not see is ignored.
    kept.append(CaseAggregate("new", "case-00", 1, 1, {"accuracy": 1.0, "latency": 1.0}, False))
    matrix = _build(
        combos=[_combo("b", BASELINE), _combo("x", BETTER), _combo("s", SAME, 90, 0)], cases=kept
    )
    row = _row(matrix, combination_label(SAME))
    assert (row.success_rate.value, row.success_rate.low) == (0.0, 0.0)
    assert row.success_rate.high is not None
    assert 0.0 < row.success_rate.high < 0.06
    assert row.metrics["accuracy"].n == 2
    assert (row.metrics["accuracy"].low, row.metrics["accuracy"].high) == (0.5, 0.5)
    assert row.metrics["latency"].value is None
    # Every cell failed: whatever the metric says, the row is not compared, nor ranked.
    assert row.verdict == "not comparable"
    assert row.delta is None
    assert matrix.rows[-1] is row
    assert matrix.warnings == []
    assert matrix.combinations == 3


def test_dead_candidate_is_not_comparable_and_not_in_holm() -> None:
    """A candidate whose cells all failed scores 0 where a failed cell scores 0: it would
    rank and test as a (worse) variant. It is "not comparable", last, and not in Holm's m."""
    values = _scenario()
    values["s"] = {case: (0.0, lat) for case, (_, lat) in values["s"].items()}
    matrix = _build(
        combos=[_combo("b", BASELINE), _combo("x", BETTER), _combo("s", SAME, 90, 0)],
        cases=_cases(values),
    )
    dead = _row(matrix, combination_label(SAME))
    assert dead.verdict == "not comparable"
    assert dead.delta is None
    assert matrix.rows[-1] is dead
    better = _row(matrix, combination_label(BETTER))
    assert better.delta is not None
    assert better.delta.p_value is not None
    # One tested row: Holm with m = 1 leaves its p-value as it is.
    assert better.delta.p_adjusted == pytest.approx(better.delta.p_value, rel=1e-12)


def test_dead_baseline_makes_every_row_not_comparable_and_says_so() -> None:
    """A baseline whose every cell failed showed 0.000 and made every variant look better.
    Now: a warning on the matrix, no verdict but "not comparable", the baseline last."""
    values = _scenario()
    values["b"] = {case: (0.0, lat) for case, (_, lat) in values["b"].items()}
    base_combo = ComboAggregate(
        combo_key="b",
        combination=BASELINE,
        runs=90,
        succeeded=0,
        tokens=None,
        cost=None,
        latency_p50=None,
        latency_p95=None,
        interrupted=10,
    )
    matrix = _build(
        combos=[base_combo, _combo("x", BETTER), _combo("s", SAME, 90, 90)],
        cases=_cases(values),
    )
    assert len(matrix.warnings) == 1
    assert (
        "baseline generate=original, retrieve=original has no successful cell"
        in (matrix.warnings[0])
    )
    assert "90 run, 80 failed, 10 interrupted" in matrix.warnings[0]
    base = _row(matrix, combination_label(BASELINE))
    assert base.verdict == "baseline"
    assert matrix.rows[-1] is base
    others = [row for row in matrix.rows if not row.baseline]
    assert {row.verdict for row in others} == {"not comparable"}
    assert all(row.delta is None for row in others)


def test_one_paired_case_is_insufficient_data() -> None:
    cases = [
        CaseAggregate("b", "only", 1, 1, {"accuracy": 0.2, "latency": 1.0}, False),
        CaseAggregate("x", "only", 1, 1, {"accuracy": 0.9, "latency": 1.0}, False),
    ]
    matrix = _build(combos=[_combo("b", BASELINE), _combo("x", BETTER)], cases=cases)
    row = _row(matrix, combination_label(BETTER))
    assert row.verdict == "insufficient data"
    assert row.delta is not None
    assert row.delta.mean == pytest.approx(0.7)
    assert row.metrics["accuracy"].low is None


def test_unknown_primary_metric_is_refused() -> None:
    with pytest.raises(ValueError, match="primary metric"):
        _build(primary_metric="nope")


def test_ties_are_ordered_by_label() -> None:
    cases = [
        CaseAggregate(key, f"c{i}", 1, 1, {"accuracy": 0.5 + 0.1 * i, "latency": 1.0}, False)
        for key in ("b", "x", "s")
        for i in range(3)
    ]
    matrix = _build(cases=cases)
    assert [row.label for row in matrix.rows] == sorted(row.label for row in matrix.rows)
    assert {row.verdict for row in matrix.rows if not row.baseline} == {"no significant difference"}
    for row in matrix.rows:
        if row.delta is not None:
            assert (row.delta.mean, row.delta.p_value, row.delta.p_adjusted) == (0.0, 1.0, 1.0)


def test_interrupted_cells_and_evaluator_errors_are_shown_not_hidden() -> None:
    """Interrupted cells are not successes and are counted apart; cells whose evaluator
    raised are counted per metric next to the metric's n (the cases with a value)."""
    interrupted = ComboAggregate(
        combo_key="x",
        combination=BETTER,
        runs=90,
        succeeded=80,
        tokens=None,
        cost=None,
        latency_p50=1.0,
        latency_p95=2.0,
        interrupted=6,
        evaluator_errors={"accuracy": 3},
    )
    values = _scenario()
    # Three cases lost their accuracy to the evaluator: they are not in its n.
    cases = [
        c
        if c.combo_key != "x" or c.case_id not in {"case-00", "case-01", "case-02"}
        else CaseAggregate("x", c.case_id, 3, 3, {"accuracy": None, "latency": 1.0}, False)
        for c in _cases(values)
    ]
    matrix = _build(combos=[_combo("b", BASELINE), interrupted], cases=cases)
    row = _row(matrix, combination_label(BETTER))
    assert (row.runs, row.succeeded, row.interrupted) == (90, 80, 6)
    assert row.success_rate.value == pytest.approx(80 / 90)
    assert row.evaluator_errors == {"accuracy": 3, "latency": 0}
    assert row.metrics["accuracy"].n == N_CASES - 3
    assert row.delta is not None
    assert row.delta.n == N_CASES - 3
    base = _row(matrix, combination_label(BASELINE))
    assert (base.interrupted, base.evaluator_errors) == (0, {"accuracy": 0, "latency": 0})


def test_amounts_keep_the_t_interval_even_inside_zero_to_one() -> None:
    """A cost in dollars lies in [0, 1] without being a score: named `unbounded`, it keeps
    the t interval; the same values unnamed get the bounded one."""
    values = _scenario()
    scaled = {
        key: {case: (accuracy, latency / 1000) for case, (accuracy, latency) in per_case.items()}
        for key, per_case in values.items()
    }
    assert _build(cases=_cases(scaled)).ci_methods["latency"] == "score"
    matrix = _build(cases=_cases(scaled), unbounded={"latency"})
    assert matrix.ci_methods["latency"] == "t"
    latency = [scaled["x"][c][1] for c in sorted(scaled["x"])]
    low, high = sps.t.interval(0.95, N_CASES - 1, loc=np.mean(latency), scale=sps.sem(latency))
    interval = _row(matrix, combination_label(BETTER)).metrics["latency"]
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9)
