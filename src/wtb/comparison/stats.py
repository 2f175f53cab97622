"""The statistics behind the comparison matrix: pure functions on plain numbers, stdlib only.

The product carries no numpy or scipy: the Student t distribution is computed here from the
regularized incomplete beta function, and the tests check every number against scipy.
The choices made for edge cases (no data, one value, no variation) are documented on each
function and in docs/statistics.md; none of them returns NaN.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, TypeVar

__all__ = [
    "BINARY",
    "STUDENT_T",
    "UNIT_SCORE",
    "DeltaMethod",
    "HolmResult",
    "MeanEstimate",
    "PairedDelta",
    "RunningMean",
    "holm",
    "mean_ci",
    "paired_delta",
    "percentile",
    "score_interval",
    "t_cdf",
    "t_ppf",
    "unit_mean_interval",
    "wilson_interval",
]

K = TypeVar("K", bound=Hashable)

_EPS = 1e-16  # continued fraction: relative change at which it has converged
_TINY = 1e-300  # modified Lentz: stands in for a zero denominator
_MAX_TERMS = 100_000  # the fraction needs O(sqrt(df)) terms; df = 1e6 takes a few thousand
_STIRLING_FROM = 20.0  # above this, log-gamma differences use the Stirling series
_LOG_FAR_TAIL = -460.0  # ln(1e-200): t so far out that df / t^2 is negligible next to 1


# --- Student t --------------------------------------------------------------------------


_EQUAL_TOLERANCE = 1e-12
"""Values this close (relative to their size) are equal: per-case means of repeats are
floats, and 1/3 + 1/3 + 1/3 need not round to exactly what 3 * (1/3) does."""


def _all_equal(values: Sequence[float]) -> bool:
    scale = max(1.0, *(abs(v) for v in values))
    return max(values) - min(values) <= _EQUAL_TOLERANCE * scale


def _stirling_correction(x: float) -> float:
    """lgamma(x) minus its Stirling approximation, (x - 1/2) ln x - x + ln(2 pi) / 2."""
    x2 = x * x
    return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / (1188 * x2)) / x2) / x2) / x2) / x


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b), without the cancellation of lgamma(a) - lgamma(a + b) when a is large.

    For df near 1e6, lgamma(df / 2) is about 6e6 and its last bit is worth 1e-9: too coarse
    for the t distribution. The difference of two log-gammas is therefore taken from the
    Stirling series, where it reduces to small, well-conditioned terms.
    """
    small, large = min(a, b), max(a, b)
    if large < _STIRLING_FROM:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # lgamma(large) - lgamma(large + small), term by term from the Stirling form.
    ratio = (
        small
        - small * math.log(large)
        - (large + small - 0.5) * math.log1p(small / large)
        + _stirling_correction(large)
        - _stirling_correction(large + small)
    )
    return math.lgamma(small) + ratio


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    total, shifted, less = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - total * x / shifted
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((less + m2) * (a + m2)),
            -(a + m) * (total + m) * x / ((a + m2) * (shifted + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = c * d
            h *= step
        if abs(step - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge (a={a}, b={b}, x={x})")


def _regularized_beta(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b) for 0 < x <= 1, with y = 1 - x given separately so neither loses digits."""
    if y <= 0.0:
        return 1.0
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    front = math.exp(a * log_x + b * log_y - _log_beta(a, b))
    # The fraction converges fast on this side of the mean; use symmetry on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, y) / b


def _check_df(df: float) -> None:
    if not (df > 0 and math.isfinite(df)):
        raise ValueError(f"degrees of freedom must be positive and finite, got {df}")


def _t_lower_tail(t: float, df: float) -> float:
    """P(T <= t) for t <= 0, accurate relative to its (possibly tiny) size."""
    if t == 0.0:
        return 0.5
    a = df / 2.0
    # With r = df / t^2 (never forming t^2, which may overflow): x = r / (1 + r), 1 - x.
    log_r = math.log(df) - 2.0 * math.log(-t)
    if log_r < _LOG_FAR_TAIL:
        # x would underflow; the first term of the series is then exact to double precision.
        return 0.5 * math.exp(a * log_r - _log_beta(a, 0.5)) / a
    scaled = math.sqrt(df) / t
    r = scaled * scaled  # inf when t is tiny: then x = 1, y = 0 and the tail is 1/2
    x = r / (1.0 + r) if r < 1.0 else 1.0 / (1.0 + 1.0 / r)
    return 0.5 * _regularized_beta(a, 0.5, x, 1.0 / (1.0 + r))


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t distribution with `df` degrees of freedom."""
    _check_df(df)
    if math.isnan(x):
        raise ValueError("t_cdf of NaN")
    if math.isinf(x):
        return 0.0 if x < 0 else 1.0
    tail = _t_lower_tail(-abs(x), df)
    return tail if x <= 0 else 1.0 - tail


def _square(x: float) -> float:
    return x * x  # unlike x ** 2, overflows to inf instead of raising


def _t_pdf(t: float, df: float) -> float:
    return math.exp(
        -0.5 * math.log(df)
        - _log_beta(df / 2.0, 0.5)
        - (df + 1.0) / 2.0 * math.log1p(_square(t / math.sqrt(df)))
    )


def t_ppf(q: float, df: float) -> float:
    """The q-quantile of Student's t: the x with t_cdf(x, df) == q, for 0 < q < 1.

    Newton's method on the cdf, kept inside a bracket that bisection shrinks whenever a
    Newton step would leave it, so it converges for every df, however heavy the tails.
    """
    _check_df(df)
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must be strictly between 0 and 1, got {q}")
    if q == 0.5:
        return 0.0
    if q > 0.5:
        return -t_ppf(1.0 - q, df)
    # Lower half: the root is negative. Bracket it, starting from the normal quantile
    # (t's quantile lies further out), then polish.
    high = 0.0
    low = min(NormalDist().inv_cdf(q), -1.0)
    while _t_lower_tail(low, df) > q:
        high, low = low, 2.0 * low
    t = low
    for _ in range(200):
        f = _t_lower_tail(t, df) - q
        if f == 0.0:
            return t
        if f > 0.0:
            high = t
        else:
            low = t
        density = _t_pdf(t, df)
        # Far in the tail the density underflows to 0: bisect there instead.
        candidate = t - f / density if density > 0.0 else high
        if not low < candidate < high:
            candidate = 0.5 * (low + high)
        if abs(candidate - t) <= 1e-15 * abs(candidate) or candidate in (low, high):
            return candidate
        t = candidate
    return t


# --- Intervals --------------------------------------------------------------------------


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def score_interval(p: float, m: float, z: float) -> tuple[float, float]:
    """The score interval of a proportion `p` with sample size `m` and quantile `z`: every
    q with |p - q| <= z sqrt(q (1 - q) / m). It lies inside [0, 1] for any p in [0, 1]."""
    z2 = z * z
    denominator = 1.0 + z2 / m
    centre = (p + z2 / (2.0 * m)) / denominator
    half = z / denominator * math.sqrt(max(0.0, p * (1.0 - p)) / m + z2 / (4.0 * m * m))
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a success rate; None when there are no trials.

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a
    point at 0 or n successes, which small batches often hit.
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    low, high = score_interval(successes / n, n, z)
    return (0.0 if successes == 0 else low), (1.0 if successes == n else high)


STUDENT_T = "t"
"""Student t over per-case means: metrics that are not confined to [0, 1]."""
BINARY = "wilson"
"""Wilson score interval: metrics whose every per-case value is 0 or 1 (proportions)."""
UNIT_SCORE = "score"
"""The score interval with the observed dispersion (`unit_mean_interval`): metrics whose
per-case values all lie in [0, 1] but are not all 0 or 1."""


def interval_method(values: Iterable[RunningMean], *, unbounded: bool = False) -> str:
    """The interval one metric gets from its per-case values (several groups of them, one
    per row): BINARY when every value is 0 or 1, UNIT_SCORE when they all lie in [0, 1],
    STUDENT_T otherwise, and always for an `unbounded` amount (cost, tokens, latency)
    whose values merely happen to fall in [0, 1]. One method per metric, so rows compare."""
    runnings = list(values)
    if unbounded or not any(r.n for r in runnings):
        return STUDENT_T
    if all(r.binary for r in runnings):
        return BINARY
    if all(r.in_unit_interval for r in runnings):
        return UNIT_SCORE
    return STUDENT_T


def unit_mean_interval(
    mean: float, variance: float, n: int, confidence: float = 0.95, *, binary: bool = False
) -> tuple[float, float] | None:
    """An interval for the mean of n values in [0, 1] that never leaves [0, 1].

    `variance` is the sample variance (n - 1 in the denominator). Binary values (every one
    0 or 1): the Wilson interval of mean * n successes out of n. Otherwise the score
    interval of a quasi-binomial proportion: a variable in [0, 1] with mean p has a
    variance of at most p (1 - p), and the data's own variance is phi p (1 - p) with the
    dispersion phi = s^2 / (mean (1 - mean)). The interval is every p with
    |mean - p| <= q sqrt(phi p (1 - p) / n), q the t quantile with n - 1 degrees of
    freedom: Wilson's formula with n / phi in place of n. For a mean far from the bounds
    it is the t interval; near a bound it is pulled in, never past it.

    Edge cases: no values, None; one non-binary value, None (nothing about spread); all
    values equal and not binary, the point itself (as the t interval).
    """
    _check_confidence(confidence)
    if n <= 0:
        return None
    if not (-_EQUAL_TOLERANCE <= mean <= 1.0 + _EQUAL_TOLERANCE):
        raise ValueError(f"the mean of values in [0, 1] cannot be {mean}")
    mean = min(1.0, max(0.0, mean))
    if binary:
        return wilson_interval(round(mean * n), n, confidence)
    if n == 1:
        return None
    spread = mean * (1.0 - mean)
    if variance <= _EQUAL_TOLERANCE * _EQUAL_TOLERANCE or spread <= 0.0:
        return mean, mean
    effective_n = n * spread / variance
    q = t_ppf(0.5 + confidence / 2.0, n - 1)
    return score_interval(mean, effective_n, q)


@dataclass(frozen=True, slots=True)
class MeanEstimate:
    """A mean with its confidence interval; fields are None when not estimable."""

    mean: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(slots=True)
class RunningMean:
    """Mean and variance accumulated one value at a time (Welford), for streamed data.

    `mean_ci` is this accumulator applied to a sequence; the matrix feeds it directly so it
    never holds every value of every metric.
    """

    n: int = 0
    mean: float = 0.0
    _squares: float = 0.0  # sum of squared deviations from the running mean
    _min: float = math.inf
    _max: float = -math.inf
    _binary: bool = True

    def add(self, value: float) -> None:
        if not math.isfinite(value):
            raise ValueError(f"values must be finite numbers, got {value}")
        if value not in (0.0, 1.0):
            self._binary = False
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self._squares += delta * (value - self.mean)
        self._min = min(self._min, value)
        self._max = max(self._max, value)

    def estimate(self, confidence: float = 0.95) -> MeanEstimate:
        """The t interval of the mean; see `mean_ci` for the edge cases."""
        _check_confidence(confidence)
        if self.n == 0:
            return MeanEstimate(None, None, None, 0)
        if self.n == 1:
            return MeanEstimate(self.mean, None, None, 1)
        if _all_equal((self._min, self._max)):
            # No variation observed: the t interval degenerates to the point itself.
            return MeanEstimate(self._min, self._min, self._min, self.n)
        half = t_ppf(0.5 + confidence / 2.0, self.n - 1) * self.standard_error()
        return MeanEstimate(self.mean, self.mean - half, self.mean + half, self.n)

    @property
    def binary(self) -> bool:
        """Every value added was 0 or 1 (true of no values)."""
        return self._binary

    @property
    def in_unit_interval(self) -> bool:
        """Every value added lies in [0, 1] (true of no values)."""
        return self.n == 0 or (self._min >= 0.0 and self._max <= 1.0)

    def estimate_by(self, method: str, confidence: float = 0.95) -> MeanEstimate:
        """The mean with the interval of `method`: STUDENT_T (`estimate`), or BINARY or
        UNIT_SCORE (`unit_mean_interval`, for values in [0, 1])."""
        if method == STUDENT_T or self.n == 0:
            return self.estimate(confidence)
        variance = self._squares / (self.n - 1) if self.n > 1 else 0.0
        bounds = unit_mean_interval(
            self.mean, variance, self.n, confidence, binary=method == BINARY and self._binary
        )
        if bounds is None:
            return MeanEstimate(self.mean, None, None, self.n)
        if _all_equal((self._min, self._max)) and method != BINARY:
            return MeanEstimate(self._min, self._min, self._min, self.n)
        return MeanEstimate(self.mean, bounds[0], bounds[1], self.n)

    def standard_error(self) -> float:
        """Sample standard deviation / sqrt(n); needs two values or more."""
        if self.n < 2:
            raise ValueError("a standard error needs at least two values")
        return math.sqrt(self._squares / (self.n - 1) / self.n)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> MeanEstimate:
    """Mean with its Student t confidence interval.

    - no values: everything None (n = 0);
    - one value: the mean, bounds None (one value says nothing about spread);
    - all values equal (two or more): low == high == mean. That is what the t interval
      gives with a zero standard deviation, and it is honest about what was seen: no
      variation at all. It is not a claim that the true mean is known exactly.
    Values must be finite; NaN or infinity raise ValueError.
    """
    running = RunningMean()
    for value in values:
        running.add(value)
    return running.estimate(confidence)


# --- Paired comparison ------------------------------------------------------------------

DeltaMethod = Literal[
    "paired t",
    "paired t (all differences zero)",
    "sign test (all differences equal)",
    "insufficient data",
]


@dataclass(frozen=True, slots=True)
class PairedDelta:
    """Mean per-case difference candidate - baseline, its interval and two-sided p-value."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    p_value: float | None
    method: DeltaMethod
    interval_method: str | None = None
    """How low and high were computed: STUDENT_T, or UNIT_SCORE for a bounded metric."""


def paired_delta(
    a: Mapping[str, float],
    b: Mapping[str, float],
    confidence: float = 0.95,
    *,
    unit: bool = False,
) -> PairedDelta:
    """Paired t test of a (candidate) against b (baseline), both per-case means by case id.

    Only cases present in both are paired. Edge cases, none of which fakes a result:
    - fewer than two pairs: the mean (if any) without interval or p-value ("insufficient
      data");
    - every difference zero: mean 0, interval [0, 0], p = 1 (nothing differs);
    - every difference equal but not zero: the t statistic is infinite and its p-value of 0
      would overstate what a constant shift over few cases shows. The p-value is then the
      exact two-sided sign test, min(1, 2 * 0.5**n), and no interval is given (there is no
      spread to build one from).

    `unit`: both sides lie in [0, 1], so every difference lies in [-1, 1]. The interval is
    then the score interval (`unit_mean_interval`) of (d + 1) / 2, mapped back, and stays
    inside [-1, 1]; the p-value is the paired t test's either way.
    """
    _check_confidence(confidence)
    differences = [a[key] - b[key] for key in sorted(a.keys() & b.keys())]
    running = RunningMean()
    for difference in differences:
        running.add(difference)
    n = running.n
    if n < 2:
        return PairedDelta(differences[0] if n else None, None, None, n, None, "insufficient data")
    if _all_equal(differences):
        if abs(differences[0]) <= _EQUAL_TOLERANCE:
            return PairedDelta(0.0, 0.0, 0.0, n, 1.0, "paired t (all differences zero)")
        return PairedDelta(
            differences[0],
            None,
            None,
            n,
            min(1.0, 2.0 * 0.5**n),
            "sign test (all differences equal)",
        )
    statistic = running.mean / running.standard_error()
    p_value = min(1.0, 2.0 * _t_lower_tail(-abs(statistic), n - 1))
    if unit:
        shifted = RunningMean()
        for difference in differences:
            shifted.add(min(1.0, max(0.0, (difference + 1.0) / 2.0)))
        half = shifted.estimate_by(UNIT_SCORE, confidence)
        if half.low is None or half.high is None:  # n >= 2 and not all equal: never
            raise ArithmeticError(f"no score interval for differences {differences}")
        low, high = 2.0 * half.low - 1.0, 2.0 * half.high - 1.0
        return PairedDelta(running.mean, low, high, n, p_value, "paired t", UNIT_SCORE)
    estimate = running.estimate(confidence)
    return PairedDelta(
        estimate.mean, estimate.low, estimate.high, n, p_value, "paired t", STUDENT_T
    )


# --- Multiple comparisons ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HolmResult:
    p_adjusted: float | None
    reject: bool


def holm(p_values: Mapping[K, float | None], alpha: float) -> dict[K, HolmResult]:
    """Holm-Bonferroni step-down correction over every non-None p-value.

    The k-th smallest of m p-values is adjusted to max over j <= k of min(1, (m - j + 1)
    p_(j)), which makes adjusted p-values monotone; a hypothesis is rejected when its
    adjusted p-value is <= alpha, the same decision as Holm's step-down rule. None (no test
    was possible) stays None, is not rejected and does not count in m.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha}")
    tested = [(p, key) for key, p in p_values.items() if p is not None]
    for p, key in tested:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value of {key!r} must be in [0, 1], got {p}")
    tested.sort(key=lambda pair: pair[0])
    m = len(tested)
    results = {key: HolmResult(None, False) for key in p_values}
    running_max = 0.0
    for rank, (p, key) in enumerate(tested):
        running_max = max(running_max, min(1.0, (m - rank) * p))
        results[key] = HolmResult(running_max, running_max <= alpha)
    return results


# --- Quantiles --------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) of ascending values, interpolated linearly between the
    two nearest ranks (numpy's default method); None for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile level must be in [0, 1], got {q}")
    if not sorted_values:
        return None
    position = q * (len(sorted_values) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    fraction = position - below
    low, high = sorted_values[below], sorted_values[above]
    return low + (high - low) * fraction
