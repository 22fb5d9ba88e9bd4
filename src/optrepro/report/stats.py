"""The statistics of docs/replication.md, as small pure functions over numpy arrays.

Everything here is direction-free: an effect is `mean(method) - mean(baseline)` in the metric's own units and
p-values are two-sided; `verdicts.py` applies a claim's direction. With few seeds (n <= 5) the standard asks
for t-intervals or exact permutation tests, never the percentile bootstrap, so the intervals here are all
t-intervals (paired where arms share seeds, Welch otherwise) and the exact tests enumerate every sign flip or
every relabelling.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Exact tests enumerate at most this many sign patterns / relabellings (2^16; C(16, 8) = 12870).
EXACT_MAX_ENUMERATIONS = 1 << 16


@dataclass(frozen=True)
class Comparison:
    """One method-vs-baseline comparison in one cell (effect = method - baseline, metric units)."""
    estimate: float          # mean (or median) of method - baseline
    se: float                # standard error of the estimate (t-based)
    df: float                # degrees of freedom (n - 1 paired; Welch-Satterthwaite unpaired)
    p: float                 # two-sided p-value of H0: effect = 0 (t-test)
    p_exact: float | None    # exact sign-flip (paired) or permutation (unpaired) p-value, two-sided
    paired: bool
    n_method: int
    n_baseline: int
    mean_method: float
    mean_baseline: float
    sd_method: float
    sd_baseline: float
    hedges_g: float          # standardized effect, pooled sd of the two arms, small-sample corrected

    @property
    def n(self) -> int:
        """Pairs for a paired comparison, else the smaller arm."""
        return self.n_method if self.paired else min(self.n_method, self.n_baseline)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        return t_interval(self.estimate, self.se, self.df, level)

    def p_equivalence(self, margin: float) -> float:
        return tost_p(self.estimate, self.se, self.df, margin)

    def smallest_detectable_effect(self, alpha: float = 0.05, power: float = 0.8) -> float:
        return smallest_detectable_effect(self.se, self.df, alpha, power)


def _as_array(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"values must be finite, got {arr.tolist()}")
    return arr


def t_interval(estimate: float, se: float, df: float, level: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval estimate +- t_{(1+level)/2, df} * se."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se if se > 0 else 0.0
    return estimate - half, estimate + half


def _t_p(estimate: float, se: float, df: float) -> float:
    """Two-sided p of H0: effect = 0; a zero standard error gives 0 (a nonzero effect) or 1."""
    if se == 0:
        return 1.0 if estimate == 0 else 0.0
    return float(2 * stats.t.sf(abs(estimate / se), df))


def tost_p(estimate: float, se: float, df: float, margin: float) -> float:
    """Two one-sided tests of equivalence within +-margin: max of the p-values of H0: effect <= -margin and
    H0: effect >= margin. p < alpha  <=>  the (1 - 2 alpha) t-interval lies inside (-margin, margin)."""
    if margin <= 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    if se == 0:
        return 0.0 if abs(estimate) < margin else 1.0
    p_lower = float(stats.t.sf((estimate + margin) / se, df))
    p_upper = float(stats.t.cdf((estimate - margin) / se, df))
    return max(p_lower, p_upper)


def smallest_detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The effect a two-sided t-test at `alpha` detects with probability `power`, given this standard
    error: (t_{1-alpha/2} + t_{power}) * se (the usual normal-approximation formula with t quantiles)."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def hedges_g(method, baseline) -> float:
    """(mean_m - mean_b) / pooled sd, times the small-sample correction J = 1 - 3 / (4 (n1 + n2) - 9).
    Used for paired and unpaired designs alike, so g always measures the effect against run-to-run spread."""
    x, y = _as_array(method), _as_array(baseline)
    n1, n2 = len(x), len(y)
    if n1 < 2 or n2 < 2:
        return float("nan")
    pooled = math.sqrt(((n1 - 1) * x.var(ddof=1) + (n2 - 1) * y.var(ddof=1)) / (n1 + n2 - 2))
    if pooled == 0:
        return float("nan")
    return float((x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9)))


def exact_sign_flip_p(diffs) -> float | None:
    """Exact two-sided sign-flip test of H0: the paired differences are symmetric about 0, with statistic
    |mean|. None when 2^n exceeds EXACT_MAX_ENUMERATIONS. The smallest possible p is 2 / 2^n (0.0625 for n = 5),
    which is why the decision uses the t-interval and this p is reported beside it."""
    d = _as_array(diffs)
    n = len(d)
    if n == 0 or 2 ** n > EXACT_MAX_ENUMERATIONS:
        return None
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    means = np.abs(signs @ d) / n
    observed = abs(d.mean())
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def exact_permutation_p(method, baseline) -> float | None:
    """Exact two-sided permutation test of equal means (statistic |mean_x - mean_y| over every relabelling).
    None when the number of relabellings exceeds EXACT_MAX_ENUMERATIONS."""
    x, y = _as_array(method), _as_array(baseline)
    n1, n = len(x), len(x) + len(y)
    if n1 == 0 or len(y) == 0 or math.comb(n, n1) > EXACT_MAX_ENUMERATIONS:
        return None
    pooled = np.concatenate([x, y])
    total = pooled.sum()
    observed = abs(x.mean() - y.mean())
    hits = count = 0
    for idx in itertools.combinations(range(n), n1):
        s1 = pooled[list(idx)].sum()
        diff = abs(s1 / n1 - (total - s1) / (n - n1))
        hits += diff >= observed - 1e-12 * max(1.0, observed)
        count += 1
    return hits / count


def paired_comparison(method, baseline) -> Comparison:
    """Paired t on method - baseline (the arrays are aligned by seed)."""
    x, y = _as_array(method), _as_array(baseline)
    if len(x) != len(y):
        raise ValueError(f"paired arms need equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs, got {len(x)}")
    d = x - y
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n))
    est = float(d.mean())
    return Comparison(estimate=est, se=se, df=n - 1, p=_t_p(est, se, n - 1), p_exact=exact_sign_flip_p(d),
                      paired=True, n_method=n, n_baseline=n, mean_method=float(x.mean()),
                      mean_baseline=float(y.mean()), sd_method=float(x.std(ddof=1)),
                      sd_baseline=float(y.std(ddof=1)), hedges_g=hedges_g(x, y))


def welch_comparison(method, baseline) -> Comparison:
    """Welch's unequal-variance t on the difference of means (independent arms)."""
    x, y = _as_array(method), _as_array(baseline)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Welch's test needs at least 2 runs per arm, got {len(x)} and {len(y)}")
    est, se, df = welch_from_summary(x.mean(), x.std(ddof=1), len(x), y.mean(), y.std(ddof=1), len(y))
    return Comparison(estimate=est, se=se, df=df, p=_t_p(est, se, df), p_exact=exact_permutation_p(x, y),
                      paired=False, n_method=len(x), n_baseline=len(y), mean_method=float(x.mean()),
                      mean_baseline=float(y.mean()), sd_method=float(x.std(ddof=1)),
                      sd_baseline=float(y.std(ddof=1)), hedges_g=hedges_g(x, y))


def median_paired_interval(diffs, level: float = 0.95) -> tuple[float, float, float]:
    """Median of the paired differences with its distribution-free order-statistic interval (the sign-test
    inversion): (median, low, high). With too few pairs for the level the interval is the full range."""
    d = np.sort(_as_array(diffs))
    n = len(d)
    # largest k with P(Binom(n, 1/2) <= k - 1) <= (1 - level) / 2; interval [d_(k), d_(n-k+1)] (1-based)
    k = int(stats.binom.ppf((1 - level) / 2, n, 0.5))
    if stats.binom.cdf(k, n, 0.5) > (1 - level) / 2:
        k -= 1
    k = max(k, 0)
    return float(np.median(d)), float(d[k]), float(d[n - 1 - k])


def welch_from_summary(mean1, sd1, n1, mean2, sd2, n2) -> tuple[float, float, float]:
    """(difference, se, Welch-Satterthwaite df) from published means, sds and counts."""
    v1, v2 = sd1 ** 2 / n1, sd2 ** 2 / n2
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1)) if se > 0 else float(n1 + n2 - 2)
    return float(mean1 - mean2), float(se), float(df)


def student_t_from_summary(mean1, sd1, n1, mean2, sd2, n2) -> tuple[float, float, float]:
    """Student's equal-variance t (scipy.stats.ttest_ind's default, which CaAdam's notebooks used) from
    summary statistics: (t, df, two-sided p). sd is the sample sd (ddof = 1)."""
    df = n1 + n2 - 2
    pooled = ((n1 - 1) * sd1 ** 2 + (n2 - 1) * sd2 ** 2) / df
    se = math.sqrt(pooled * (1 / n1 + 1 / n2))
    t = (mean1 - mean2) / se
    return float(t), float(df), float(2 * stats.t.sf(abs(t), df))


def prediction_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Where one more run is expected to land: mean +- t_{(1+level)/2, n-1} * sd * sqrt(1 + 1/n).
    The standard compares a published value with n = 1 (or unknown n) with this, not with the mean's interval."""
    x = _as_array(values)
    n = len(x)
    if n < 2:
        raise ValueError(f"a prediction interval needs at least 2 runs, got {n}")
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(x.std(ddof=1)) * math.sqrt(1 + 1 / n)
    return float(x.mean()) - half, float(x.mean()) + half


# --- multiplicity ----------------------------------------------------------------------------------------

def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg, "none": lambda p: np.asarray(p, dtype=float)}


def adjust(pvalues, method: str) -> np.ndarray:
    if method not in CORRECTIONS:
        from optrepro.registry import unknown

        raise unknown("multiplicity correction", method, CORRECTIONS)
    if len(pvalues) == 0:
        return np.asarray([], dtype=float)
    return CORRECTIONS[method](pvalues)
