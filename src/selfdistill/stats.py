"""Means and spreads shared by evaluation (over items) and continual reports (over seeds).

Usage: ``mean, stderr = mean_stderr([1.0, 0.0, 1.0])`` gives 0.667 and 0.333.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and its standard error (sample std / sqrt(n)); no mean when empty, no stderr below 2 values.

    Summed with ``math.fsum``, so a score does not depend on the order its items were evaluated in."""
    if (n := len(values)) == 0:
        return None, None
    mean = math.fsum(values) / n
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """``(mean, sample std (ddof 1; NaN for one value), n)`` over the finite values; NaN and 0 when none."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if not array.size:
        return math.nan, math.nan, 0
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan, int(array.size)
