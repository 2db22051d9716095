"""The one confidence-interval helper of the tracks and the sweep (Student t, :mod:`scipy.stats`).

The 95 % interval of a mean over ``n`` independent values (e.g. seeds) is
``mean +- t_{0.975, n-1} * sd / sqrt(n)`` with ``sd`` the sample standard deviation (``ddof=1``).
With fewer than two values there is no interval: the half-width is NaN (written as ``null`` in
JSON), never 0.

>>> m, h = mean_ci95([1.0, 2.0, 3.0]); round(m, 3), round(h, 3)
(2.0, 2.484)
>>> mean_ci95([0.5])
(0.5, nan)
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
