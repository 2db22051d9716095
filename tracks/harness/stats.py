"""The statistics helpers of the tracks and the sweep (:mod:`scipy.stats`): the Student-t 95 %
confidence interval of a mean, and the paired comparison of two methods over the same seeds.

The 95 % interval of a mean over ``n`` independent values (e.g. seeds) is
``mean +- t_{0.975, n-1} * sd / sqrt(n)`` with ``sd`` the sample standard deviation (``ddof=1``).
With fewer than two values there is no interval: the half-width is NaN (written as ``null`` in
JSON), never 0.

>>> m, h = mean_ci95([1.0, 2.0, 3.0]); round(m, 3), round(h, 3)
(2.0, 2.484)
>>> mean_ci95([0.5])
(0.5, nan)

:func:`paired_test` compares two methods run on the same seeds (pairs ``(a_i, b_i)``): the paired
t-test (``scipy.stats.ttest_rel``, two-sided), the mean difference ``a - b`` with its 95 % CI, and
Cohen's d for paired samples (``d_z = mean(a - b) / sd(a - b)``, ``ddof=1``):

>>> r = paired_test([0.98, 0.97, 0.99], [0.97, 0.97, 0.97])
>>> round(r["mean_diff"], 4), round(r["cohens_d"], 3), round(r["p_value"], 3), r["n"]
(0.01, 1.0, 0.225, 3)
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """``(mean, half_width)`` of the 95 % Student-t interval; NaN half-width for n < 2, NaN mean for n = 0."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float("nan")
    from scipy import stats

    return float(v.mean()), float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def paired_test(a: Iterable[float], b: Iterable[float]) -> dict[str, float]:
    """Paired comparison of ``a`` and ``b`` (same length, ``a[i]`` and ``b[i]`` from the same seed).

    Returns ``{"n", "mean_diff", "mean_diff_ci95", "t_stat", "p_value", "cohens_d"}`` for the
    differences ``a - b``: the two-sided paired t-test (``scipy.stats.ttest_rel``), the Student-t
    95 % half-width of the mean difference, and Cohen's d of paired samples ``mean / sd`` (``ddof=1``).
    With fewer than two pairs every statistic but ``mean_diff`` is NaN; with identical differences
    (sd 0) the t statistic and d are +-inf (or NaN for all-zero differences) as scipy gives them.
    """
    x = np.asarray(list(a), dtype=np.float64)
    y = np.asarray(list(b), dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_test: a has {x.size} values but b has {y.size}; pair them by seed")
    d = x - y
    nan = float("nan")
    out = {"n": int(d.size), "mean_diff": float(d.mean()) if d.size else nan, "mean_diff_ci95": nan,
           "t_stat": nan, "p_value": nan, "cohens_d": nan}
    if d.size < 2:
        return out
    from scipy import stats

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sd 0: scipy's inf/nan is the answer
        res = stats.ttest_rel(x, y)
    sd = float(d.std(ddof=1))
    out["mean_diff_ci95"] = mean_ci95(d)[1]
    out["t_stat"], out["p_value"] = float(res.statistic), float(res.pvalue)
    if sd > 0:
        out["cohens_d"] = float(d.mean() / sd)
    elif d.mean() != 0:
        out["cohens_d"] = float(np.copysign(np.inf, d.mean()))
    return out
