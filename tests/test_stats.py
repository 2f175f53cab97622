"""The statistics, checked number by number against scipy (used here only, never in wtb)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as sps  # type: ignore[import-untyped]

from wtb.comparison.stats import (
    BINARY,
    STUDENT_T,
    UNIT_SCORE,
    HolmResult,
    MeanEstimate,
    RunningMean,
    holm,
    mean_ci,
    paired_delta,
    percentile,
    t_cdf,
    t_ppf,
    unit_mean_interval,
    wilson_interval,
)

DFS = [1, 1.5, 2, 3, 4, 7, 10, 29, 30, 100, 1000, 12_345, 100_000, 999_999, 1_000_000]
XS = [-1e6, -300, -40, -10, -5, -3, -1.96, -1, -0.3, -1e-6, 0, 1e-6, 0.3, 1, 2, 4, 12, 50, 1e4]
QS = [1e-12, 1e-8, 1e-5, 1e-3, 0.005, 0.025, 0.05, 0.1, 0.3, 0.5, 0.6, 0.9, 0.95, 0.975, 0.999]


@pytest.mark.parametrize("df", DFS)
def test_t_cdf_matches_scipy(df: float) -> None:
    for x in XS:
        assert t_cdf(x, df) == pytest.approx(sps.t.cdf(x, df), abs=1e-9)


@pytest.mark.parametrize("df", [1, 2, 5, 30, 1000, 1_000_000])
def test_t_cdf_lower_tail_is_accurate_relative_to_its_size(df: float) -> None:
    for x in [-3.0, -6.0, -20.0, -100.0]:
        expected = sps.t.cdf(x, df)
        if expected > 1e-290:
            assert t_cdf(x, df) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("df", DFS)
def test_t_ppf_matches_scipy_and_inverts_the_cdf(df: float) -> None:
    for q in QS:
        t = t_ppf(q, df)
        assert t == pytest.approx(sps.t.ppf(q, df), rel=1e-9, abs=1e-12)
        assert t_cdf(t, df) == pytest.approx(q, rel=1e-9)


def test_t_ppf_is_antisymmetric_and_zero_at_the_median() -> None:
    assert t_ppf(0.5, 3) == 0.0
    for q in [0.015625, 0.125, 0.375]:  # 1 - q is exact for these
        assert t_ppf(1 - q, 9) == -t_ppf(q, 9)


def test_t_cdf_limits() -> None:
    assert t_cdf(-math.inf, 5) == 0.0
    assert t_cdf(math.inf, 5) == 1.0
    assert t_cdf(0.0, 5) == 0.5


def test_t_far_tails_and_tiny_arguments() -> None:
    # Closed forms: Cauchy (df = 1) has cdf(t) ~ 1 / (pi |t|) far out; df = 2 has ~ 1 / (2 t^2).
    assert t_cdf(-1e200, 1) == pytest.approx(1 / (math.pi * 1e200), rel=1e-12)
    assert t_cdf(-1e100, 2) == pytest.approx(0.5 / 1e200, rel=1e-12)
    assert t_ppf(1e-300, 1) == pytest.approx(-1 / (math.pi * 1e-300), rel=1e-9)
    assert t_ppf(1e-300, 0.5) == -math.inf  # the true quantile is beyond the float range
    for df in (0.5, 1, 5, 1e6):
        assert t_cdf(-1e-300, df) == 0.5
        assert t_cdf(5e-324, df) == 0.5


@pytest.mark.parametrize("df", [0, -1, math.inf, math.nan])
def test_bad_degrees_of_freedom_are_refused(df: float) -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, df)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_ppf(0.9, df)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5])
def test_t_ppf_refuses_levels_outside_the_open_unit_interval(q: float) -> None:
    with pytest.raises(ValueError, match="quantile level"):
        t_ppf(q, 4)


def _wilson_by_formula(k: int, n: int, confidence: float) -> tuple[float, float]:
    z = sps.norm.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(n) / (n + z * z) * math.sqrt(p * (1 - p) + z * z / (4 * n))
    return centre - half, centre + half


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_interval_matches_scipy_and_the_formula(confidence: float) -> None:
    for n in [1, 2, 5, 17, 100, 1000]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            got = wilson_interval(k, n, confidence)
            assert got is not None
            ci = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
            assert got == pytest.approx((ci.low, ci.high), abs=1e-12)
            assert got == pytest.approx(_wilson_by_formula(k, n, confidence), abs=1e-12)
            assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) is None
    none_succeeded = wilson_interval(0, 10)
    all_succeeded = wilson_interval(10, 10)
    assert none_succeeded is not None
    assert all_succeeded is not None
    # All failed: the bound at 0 is exact and the interval still has width.
    assert none_succeeded[0] == 0.0
    assert none_succeeded[1] > 0.2
    assert all_succeeded[1] == 1.0
    assert all_succeeded[0] < 0.8
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(-1, 2)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


@pytest.mark.parametrize("n", [2, 3, 10, 250])
def test_mean_ci_matches_scipy_t_interval(n: int) -> None:
    rng = random.Random(n)
    values = [rng.gauss(0.6, 0.2) for _ in range(n)]
    for confidence in (0.9, 0.95, 0.99):
        got = mean_ci(values, confidence)
        low, high = sps.t.interval(confidence, n - 1, loc=np.mean(values), scale=sps.sem(values))
        assert got.n == n
        assert got.mean == pytest.approx(float(np.mean(values)), rel=1e-12)
        assert (got.low, got.high) == pytest.approx((low, high), rel=1e-9)


def test_mean_ci_edges() -> None:
    assert mean_ci([]) == MeanEstimate(None, None, None, 0)
    assert mean_ci([0.7]) == MeanEstimate(0.7, None, None, 1)
    # No variation observed: the interval is the point, not NaN.
    assert mean_ci([0.1, 0.1, 0.1]) == MeanEstimate(0.1, 0.1, 0.1, 3)
    assert mean_ci(iter([1.0, 3.0])).mean == 2.0
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, math.inf])


def test_paired_delta_matches_scipy_paired_t_test() -> None:
    rng = random.Random(7)
    for n, shift in [(2, 0.3), (5, 0.1), (30, 0.05), (30, 0.0), (200, -0.02)]:
        baseline = {f"c{i}": rng.random() for i in range(n)}
        candidate = {k: v + shift + rng.gauss(0, 0.1) for k, v in baseline.items()}
        keys = sorted(baseline)
        a = [candidate[k] for k in keys]
        b = [baseline[k] for k in keys]
        diffs = np.subtract(a, b)
        got = paired_delta(candidate, baseline)
        expected_p = sps.ttest_rel(a, b).pvalue
        low, high = sps.t.interval(0.95, n - 1, loc=diffs.mean(), scale=sps.sem(diffs))
        assert got.method == "paired t"
        assert got.n == n
        assert got.mean == pytest.approx(float(diffs.mean()), rel=1e-9, abs=1e-15)
        assert got.p_value == pytest.approx(expected_p, rel=1e-9)
        assert (got.low, got.high) == pytest.approx((low, high), rel=1e-9)


def test_paired_delta_tiny_p_values_keep_their_precision() -> None:
    baseline = {f"c{i}": 0.0 for i in range(50)}
    candidate = {f"c{i}": 1.0 + 0.01 * math.sin(i) for i in range(50)}
    got = paired_delta(candidate, baseline)
    expected = sps.ttest_1samp([candidate[k] for k in sorted(candidate)], 0.0).pvalue
    assert 0.0 < expected < 1e-50
    assert got.p_value == pytest.approx(expected, rel=1e-8)


def test_paired_delta_pairs_only_cases_present_in_both() -> None:
    a = {"x": 1.0, "y": 2.0, "z": 4.0, "only-a": 100.0}
    b = {"x": 0.5, "y": 1.0, "z": 1.0, "only-b": -100.0}
    got = paired_delta(a, b)
    assert got.n == 3
    assert got.mean == pytest.approx((0.5 + 1.0 + 3.0) / 3)
    assert got.p_value == pytest.approx(sps.ttest_1samp([0.5, 1.0, 3.0], 0.0).pvalue, rel=1e-9)


def test_paired_delta_edges() -> None:
    none = paired_delta({"a": 1.0}, {"b": 1.0})
    assert (none.mean, none.low, none.high, none.n, none.p_value) == (None, None, None, 0, None)
    assert none.method == "insufficient data"

    one = paired_delta({"a": 0.9}, {"a": 0.4})
    assert one.mean == pytest.approx(0.5)
    assert (one.low, one.high, one.p_value, one.n) == (None, None, None, 1)
    assert one.method == "insufficient data"

    same = paired_delta({"a": 0.3, "b": 0.8}, {"a": 0.3, "b": 0.8})
    assert (same.mean, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)

    for n in (2, 5, 6, 40):
        shifted = paired_delta({f"c{i}": 1.0 for i in range(n)}, {f"c{i}": 0.0 for i in range(n)})
        assert shifted.method == "sign test (all differences equal)"
        assert shifted.mean == 1.0
        assert (shifted.low, shifted.high) == (None, None)
        expected = sps.binomtest(n, n, 0.5).pvalue
        assert shifted.p_value == pytest.approx(min(1.0, expected), rel=1e-12)
    assert paired_delta({"a": 2.0}, {"a": 1.0}, confidence=0.5).mean == 1.0
    with pytest.raises(ValueError, match="finite"):
        paired_delta({"a": math.nan, "b": 1.0}, {"a": 1.0, "b": 1.0})


def test_holm_hand_worked_example() -> None:
    # m = 4. Sorted: d .005 x4 = .02; a .01 x3 = .03; c .03 x2 = .06; b .04 x1 = .04 -> .06
    # (monotone). At alpha .05 the step-down stops at c, so b is kept although .04 < .05.
    got = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": None}, alpha=0.05)
    adjusted = {key: result.p_adjusted for key, result in got.items()}
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02, "e": None})
    assert {key for key, result in got.items() if result.reject} == {"a", "d"}
    assert list(got) == ["a", "b", "c", "d", "e"]


def _holm_step_down(p: dict[int, float], alpha: float) -> tuple[dict[int, float], set[int]]:
    """Holm written from its textbook definition, independently of wtb.comparison.stats."""
    order = sorted(p, key=lambda k: p[k])
    m = len(order)
    rejected: set[int] = set()
    for i, key in enumerate(order):
        if p[key] > alpha / (m - i):
            break
        rejected.add(key)
    adjusted = {
        key: min(1.0, max((m - j) * p[order[j]] for j in range(i + 1)))
        for i, key in enumerate(order)
    }
    return adjusted, rejected


def test_holm_agrees_with_the_textbook_step_down() -> None:
    rng = random.Random(3)
    for trial in range(300):
        m = rng.randint(1, 12)
        p = {k: rng.random() ** rng.choice([1, 3, 6]) for k in range(m)}
        alpha = rng.choice([0.01, 0.05, 0.1])
        adjusted, rejected = _holm_step_down(p, alpha)
        got = holm(p, alpha)
        for key, raw in p.items():
            result = got[key]
            assert result.p_adjusted is not None
            assert result.p_adjusted == pytest.approx(adjusted[key], rel=1e-12), trial
            assert result.reject == (key in rejected), trial
            assert raw <= result.p_adjusted <= 1.0


def test_holm_edges() -> None:
    assert holm({}, 0.05) == {}
    assert holm({"a": None}, 0.05) == {"a": HolmResult(None, False)}
    assert holm({"a": 0.9, "b": 0.8}, 0.05)["a"].p_adjusted == 1.0
    with pytest.raises(ValueError, match="p-value"):
        holm({"a": 1.5}, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        holm({"a": 0.5}, 0.0)


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(11)
    for n in [1, 2, 3, 10, 101]:
        values = sorted(rng.uniform(0, 1000) for _ in range(n))
        for q in [0.0, 0.05, 0.25, 0.5, 0.95, 0.99, 1.0]:
            expected = float(np.percentile(values, q * 100))
            assert percentile(values, q) == pytest.approx(expected, rel=1e-12)
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match="quantile level"):
        percentile([1.0], 1.5)


def test_differences_equal_up_to_rounding_are_equal() -> None:
    """Per-case means of three repeats: 2/3 - 1/3 and 1 - 2/3 differ in the last bit only.

    Exact comparison would call that spread and give an absurd t p-value (~1e-80)."""
    a = {f"c{i}": (1 / 3 if i % 2 else 2 / 3) + 1 / 3 for i in range(6)}
    b = {f"c{i}": 1 / 3 if i % 2 else 2 / 3 for i in range(6)}
    assert len({a[k] - b[k] for k in a}) == 2  # not bit-identical
    result = paired_delta(a, b)
    assert result.method == "sign test (all differences equal)"
    assert result.p_value == pytest.approx(2 * 0.5**6)


# --- Intervals that respect the bounds of [0, 1] metrics ---------------------------------


def _running(values: list[float]) -> RunningMean:
    running = RunningMean()
    for value in values:
        running.add(value)
    return running


def test_a_t_interval_leaves_the_unit_interval_and_the_bounded_ones_do_not() -> None:
    """The report that started it: two cases of three right showed 0.667 ±1.434."""
    running = _running([1.0, 1.0, 0.0])
    t = running.estimate_by(STUDENT_T)
    assert t.low is not None
    assert t.high is not None
    assert t.mean is not None
    assert t.high - t.mean == pytest.approx(1.434, abs=1e-3)  # the t interval: past 1
    wilson = running.estimate_by(BINARY)
    assert (wilson.low, wilson.high) == pytest.approx(
        wilson_interval(2, 3) or (math.nan, math.nan), rel=1e-12
    )
    score = running.estimate_by(UNIT_SCORE)
    for estimate in (wilson, score):
        assert estimate.low is not None
        assert estimate.high is not None
        assert 0.0 <= estimate.low < 2 / 3 < estimate.high <= 1.0


@pytest.mark.parametrize("method", [BINARY, UNIT_SCORE])
@pytest.mark.parametrize(
    "values",
    [[1.0], [0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [1.0] * 10, [0.0] * 10, [0.0, 1.0] * 5],
    ids=["one 1", "one 0", "two 1s", "two 0s", "1 and 0", "all ones", "all zeros", "half"],
)
def test_binary_values_keep_to_their_bounds_with_width(method: str, values: list[float]) -> None:
    estimate = _running(values).estimate_by(method)
    assert estimate.mean == pytest.approx(sum(values) / len(values))
    if method == UNIT_SCORE and len(values) == 1:
        # One value says nothing about spread unless it is a binary outcome.
        assert (estimate.low, estimate.high) == (None, None)
        return
    assert estimate.low is not None
    assert estimate.high is not None
    assert estimate.mean is not None
    assert 0.0 <= estimate.low <= estimate.mean <= estimate.high <= 1.0
    if method == BINARY:
        # Wilson keeps a width at 0 % and 100 %: n cases all right is not certainty.
        assert estimate.high - estimate.low > 0.2


@pytest.mark.parametrize("n", [2, 3, 5, 30])
def test_unit_score_interval_stays_inside_for_data_near_a_bound(n: int) -> None:
    rng = random.Random(n)
    for _ in range(200):
        values = [min(1.0, max(0.0, 1.0 - rng.expovariate(8.0))) for _ in range(n)]
        estimate = _running(values).estimate_by(UNIT_SCORE)
        if estimate.low is None:
            assert len(set(values)) == 1
            continue
        assert estimate.high is not None
        assert estimate.mean is not None
        assert 0.0 <= estimate.low <= estimate.mean <= estimate.high <= 1.0


def test_unit_score_edges() -> None:
    assert unit_mean_interval(0.0, 0.0, 0) is None
    assert unit_mean_interval(0.4, 0.0, 1) is None  # one value, not binary
    assert unit_mean_interval(0.4, 0.0, 5) == (0.4, 0.4)  # no spread: the point, as t
    assert _running([0.4, 0.4, 0.4]).estimate_by(UNIT_SCORE) == MeanEstimate(0.4, 0.4, 0.4, 3)
    assert _running([]).estimate_by(UNIT_SCORE) == MeanEstimate(None, None, None, 0)
    with pytest.raises(ValueError, match="cannot be"):
        unit_mean_interval(1.5, 0.1, 4)


@pytest.mark.parametrize(
    ("method", "draw", "n", "true_mean"),
    [
        # Binary outcomes, success probability 0.9: where Wald fails, Wilson holds.
        (BINARY, lambda rng: float(rng.random() < 0.9), 20, 0.9),
        # Skewed scores crowded against 1 (Beta(8, 1), mean 8/9), few cases.
        (UNIT_SCORE, lambda rng: rng.betavariate(8, 1), 8, 8 / 9),
        # Scores in the middle (Beta(2, 2), mean 1/2).
        (UNIT_SCORE, lambda rng: rng.betavariate(2, 2), 12, 0.5),
    ],
    ids=["wilson p=0.9 n=20", "score beta(8,1) n=8", "score beta(2,2) n=12"],
)
def test_bounded_intervals_cover_the_true_mean(
    method: str, draw: object, n: int, true_mean: float
) -> None:
    """By simulation, seeded: the 95 % interval holds the true mean about 95 % of the time,
    and never leaves [0, 1]."""
    assert callable(draw)
    rng = random.Random(20240611)
    trials, covered = 2000, 0
    for _ in range(trials):
        values = [draw(rng) for _ in range(n)]
        running = _running(values)
        chosen = BINARY if running.binary else UNIT_SCORE
        estimate = running.estimate_by(chosen if method == UNIT_SCORE else method)
        assert estimate.low is not None
        assert estimate.high is not None
        assert 0.0 <= estimate.low <= estimate.high <= 1.0
        covered += estimate.low <= true_mean <= estimate.high
    assert 0.91 <= covered / trials <= 0.99


def test_paired_delta_of_unit_metrics_stays_in_minus_one_to_one() -> None:
    candidate = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0}
    baseline = {"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
    unbounded = paired_delta(candidate, baseline)
    assert unbounded.high is not None
    assert unbounded.high > 1.0  # t: a difference of more than 1 between two [0, 1] scores
    bounded = paired_delta(candidate, baseline, unit=True)
    assert bounded.interval_method == UNIT_SCORE
    assert bounded.mean == pytest.approx(0.75)
    assert bounded.low is not None
    assert bounded.high is not None
    assert -1.0 <= bounded.low < 0.75 < bounded.high <= 1.0
    # The test itself is the paired t test either way.
    assert bounded.p_value == unbounded.p_value
    worse = paired_delta(baseline, candidate, unit=True)
    assert worse.low is not None
    assert worse.high is not None
    assert (worse.low, worse.high) == pytest.approx((-bounded.high, -bounded.low), abs=1e-12)
    assert worse.low >= -1.0
