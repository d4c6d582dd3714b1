"""Distribution comparison, pure and numpy-only: PSI and the two-sample KS statistic.

Used by the rollout judge (canary vs baseline outputs) and by drift monitoring (live inputs vs a
reference profile). Both functions are symmetric in spirit but PSI treats its first argument as
the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Values = Sequence[float] | npt.NDArray[Any]

EPSILON = 1e-4
"""Floor for bin shares, so an empty bin does not make PSI infinite."""


def psi(reference: Values, actual: Values) -> float:
    """Population stability index between two histograms over the same bins (counts or
    shares). 0 = identical; > 0.1 moderate; > 0.25 a large shift (rules of thumb)."""
    expected = np.asarray(reference, dtype=np.float64)
    observed = np.asarray(actual, dtype=np.float64)
    if expected.shape != observed.shape or expected.ndim != 1 or not len(expected):
        raise ValueError("psi: give two histograms over the same bins")
    if expected.sum() <= 0 or observed.sum() <= 0:
        return 0.0
    e = np.maximum(expected / expected.sum(), EPSILON)
    o = np.maximum(observed / observed.sum(), EPSILON)
    return float(np.sum((o - e) * np.log(o / e)))


def ks(reference: Values, actual: Values) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs
    (0 = same distribution, 1 = disjoint)."""
    a = np.sort(np.asarray(reference, dtype=np.float64))
    b = np.sort(np.asarray(actual, dtype=np.float64))
    if not len(a) or not len(b):
        return 0.0
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def quantile_edges(sample: Values, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the sample's quantiles (duplicates removed), for :func:`histogram`."""
    values = np.asarray(sample, dtype=np.float64)
    if not len(values):
        return np.array([], dtype=np.float64)
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def histogram(sample: Values, edges: np.ndarray) -> np.ndarray:
    """Counts of ``sample`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    values = np.asarray(sample, dtype=np.float64)
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def sample_psi(reference: Values, actual: Values, bins: int = 10) -> float:
    """PSI between two raw samples, binned at the reference's quantiles. Few distinct values
    (labels) get one bin each."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if not len(ref) or not len(act):
        return 0.0
    distinct = np.unique(np.concatenate([ref, act]))
    if len(distinct) <= bins:
        ref_counts = np.array([np.sum(ref == v) for v in distinct])
        act_counts = np.array([np.sum(act == v) for v in distinct])
        return psi(ref_counts, act_counts)
    edges = quantile_edges(ref, bins)
    return psi(histogram(ref, edges), histogram(act, edges))
