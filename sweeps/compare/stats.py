"""Seed-noise statistics on top of scipy.stats: Student-t intervals of a mean, Welch's t-test."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import stats as sps


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    return float(2.0 * sps.t.sf(abs(t), df))


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (e.g. q=0.975: the 95% two-sided value)."""
    return float(sps.t.ppf(q, df))


@dataclass
class MeanCI:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    low: float
    high: float  # 95% t interval of the mean

    def fmt(self) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return f"{self.mean:.4f} (1 value)"
        return f"{self.mean:.4f} ± {self.std:.4f} [{self.low:.4f}, {self.high:.4f}]"


def mean_ci(values: Sequence[float], confidence: float = 0.95, bounds: Tuple[float, float] = (0.0, 1.0)) -> MeanCI:
    """Mean, sample std and the Student-t interval of the mean, clipped to ``bounds`` (accuracies).

    ``values``: any 1-d sequence; None and non-finite entries are dropped first.
    """
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return MeanCI(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return MeanCI(1, mean, math.nan, math.nan, math.nan)
    std = float(v.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(n, mean, std, max(bounds[0], mean - half), min(bounds[1], mean + half))


@dataclass
class Welch:
    diff: float  # mean(a) - mean(b)
    t: float
    df: float  # Welch–Satterthwaite degrees of freedom
    p: float  # two-sided


def welch_test(a: MeanCI, b: MeanCI) -> Optional[Welch]:
    """Welch's unequal-variance t-test of two means (None with fewer than 2 values on a side).

    scipy.stats.ttest_ind_from_stats(equal_var=False) on the summaries (n, mean, std), i.e. what
    ttest_ind(a, b, equal_var=False) gives on the values; ``df`` is the Welch–Satterthwaite one.
    With no variance on either side the test is decided by the means alone.
    """
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    diff = a.mean - b.mean
    if va + vb == 0:  # no seed noise at all: scipy would give nan; any gap is then certain
        return Welch(diff, 0.0 if diff == 0 else math.copysign(math.inf, diff), math.inf, 1.0 if diff == 0 else 0.0)
    res = sps.ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n, equal_var=False)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    return Welch(diff, float(res.statistic), df, float(res.pvalue))
