"""What a model's outcomes say: the metrics feedback is scored by, and one arm's estimate of each.

Feedback joined to a prediction turns into one number ``x`` per observation, chosen by the
metric (and read from the feedback field named by :attr:`Metric.kind`):

========================  ===============================================  =========  ========
metric                    x                                                value      better
========================  ===============================================  =========  ========
``accuracy``              1 if the label equals the prediction, else 0     mean x     higher
``error_rate``            the same x as accuracy                           1 - mean   lower
``mae``                   ``|value - predicted|``                          mean x     lower
``rmse``                  ``(value - predicted) ** 2``                     sqrt mean  lower
``mean_reward``           the reward                                       mean x     higher
``conversion``            1 if the reward is positive, else 0              mean x     higher
========================  ===============================================  =========  ========

A :class:`Tally` holds the sufficient statistics of one arm's ``x`` (count, sum, sum of
squares); tallies add, so windows, replicas and workers merge by ``+``. :func:`estimate` turns
one tally into an :class:`Estimate` with a fixed-sample confidence interval: Wilson score for the
proportions, the normal interval of the mean for the others (for RMSE: of the mean squared
error, then the square root of its bounds). These intervals are for one look at one arm; to
compare two arms while data keeps arriving use :mod:`pitstop.serving.comparison`.

NaN means "unknown": an arm without observations has NaN value and bounds, and a non-proportion
metric with a single observation has its value but NaN bounds (one number says nothing about
spread). :meth:`Estimate.to_json` writes NaN as ``null`` so the JSON stays valid.

Everything here is pure and cheap; nothing is imported from the rest of pitstop but its errors.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from pitstop.errors import InvalidInput

Kind = Literal["label", "value", "reward"]

TINY_VARIANCE = 1e-12
"""Floor of :meth:`Tally.variance` (a standard deviation of 1e-6 on the scale of ``x``): a
variance is divided by, and constant data must not make that a division by zero."""


class Metric(enum.StrEnum):
    ACCURACY = "accuracy"
    ERROR_RATE = "error_rate"
    MAE = "mae"
    RMSE = "rmse"
    MEAN_REWARD = "mean_reward"
    CONVERSION = "conversion"

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.ACCURACY, Metric.MEAN_REWARD, Metric.CONVERSION)

    @property
    def proportion(self) -> bool:
        """Whether ``x`` is 0 or 1 (and the value a rate)."""
        return self in (Metric.ACCURACY, Metric.ERROR_RATE, Metric.CONVERSION)

    @property
    def kind(self) -> Kind:
        """The feedback field ``x`` is computed from: a true label, a true value, or a reward."""
        if self in (Metric.ACCURACY, Metric.ERROR_RATE):
            return "label"
        if self in (Metric.MAE, Metric.RMSE):
            return "value"
        return "reward"

    @classmethod
    def parse(cls, text: str) -> Metric:
        """The metric named ``text`` (case, spaces and hyphens forgiven); InvalidInput naming the
        known metrics otherwise."""
        name = str(text).strip().lower().replace("-", "_").replace(" ", "_")
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(metric.value for metric in cls)
            raise InvalidInput(f"unknown metric {text!r}; known: {known}") from None


@dataclass(frozen=True)
class Tally:
    """Sufficient statistics of one arm's observations ``x`` for one metric: ``n``,
    ``total`` = sum x, ``squares`` = sum x**2.

    For ACCURACY, ERROR_RATE and CONVERSION x is 0 or 1 (the observation counted is "correct" or
    "converted"; ERROR_RATE uses the same tally as ACCURACY). For RMSE x is the squared error, so
    ``squares`` is the sum of err**4."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    @classmethod
    def of(cls, xs: Iterable[float]) -> Tally:
        """The tally of the observations ``xs``."""
        values = np.fromiter(xs, dtype=np.float64)
        return cls(len(values), float(values.sum()), float(np.square(values).sum()))

    @property
    def mean(self) -> float:
        """Mean of x; NaN without observations."""
        return self.total / self.n if self.n else math.nan

    def variance(self, binary: bool = False) -> float:
        """Variance of one observation x.

        ``binary=False``: the unbiased sample variance, at least :data:`TINY_VARIANCE`; NaN with
        fewer than two observations. ``binary=True`` (x is 0 or 1): the smoothed ``p(1 - p)``
        with ``p = (total + 0.5) / (n + 1)``, so that 0 or n successes still have a spread
        (and no data at all gives 0.25, the largest a proportion can have)."""
        if binary:
            p = (self.total + 0.5) / (self.n + 1)
            return max(p * (1.0 - p), TINY_VARIANCE)
        if self.n < 2:
            return math.nan
        # Rounding can push the difference of two large sums below zero: the floor catches it.
        spread = (self.squares - self.total * self.total / self.n) / (self.n - 1)
        return max(spread, TINY_VARIANCE)

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.n + other.n, self.total + other.total, self.squares + other.squares)


@dataclass(frozen=True)
class Estimate:
    """One arm's ``metric``: its value on the metric's own scale and a confidence interval
    ``[low, high]``, from ``n`` observations. NaN is unknown (see the module docstring)."""

    metric: Metric
    n: int
    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric.value,
            "n": self.n,
            "value": finite_or_none(self.value),
            "low": finite_or_none(self.low),
            "high": finite_or_none(self.high),
        }


def finite_or_none(number: float) -> float | None:
    """``number``, or None when it is NaN or infinite (JSON has neither)."""
    return number if math.isfinite(number) else None


def z_score(confidence: float) -> float:
    """The two-sided standard normal quantile of ``confidence`` (1.96 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise InvalidInput(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(successes: float, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (NaN, NaN) when ``n`` is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / (1.0 + z2n)
    # The bounds are exactly 0 and 1 at 0 and n successes; rounding would leave a speck.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def estimate(metric: Metric, tally: Tally, confidence: float = 0.95) -> Estimate:
    """``metric`` of the arm whose observations ``tally`` holds, with a ``confidence`` interval
    (Wilson for proportions; ERROR_RATE mirrors the accuracy interval)."""
    z = z_score(confidence)
    n = tally.n
    if n == 0:
        return Estimate(metric, 0, math.nan, math.nan, math.nan)
    mean = tally.mean
    if metric.proportion:
        low, high = wilson(tally.total, n, z)
        if metric is Metric.ERROR_RATE:
            return Estimate(metric, n, 1.0 - mean, 1.0 - high, 1.0 - low)
        return Estimate(metric, n, mean, low, high)
    half = z * math.sqrt(tally.variance() / n)  # NaN for a single observation
    if metric is Metric.RMSE:
        # The interval of the mean squared error, mapped through the square root.
        low = math.sqrt(max(0.0, mean - half)) if math.isfinite(half) else math.nan
        high = math.sqrt(mean + half) if math.isfinite(half) else math.nan
        return Estimate(metric, n, math.sqrt(max(0.0, mean)), low, high)
    return Estimate(metric, n, mean, mean - half, mean + half)


def setting_number(scope: str, name: str, default: float, value: Any) -> Any:
    """A JSON setting ``value`` as the type of ``default`` (int or float); InvalidInput naming
    ``scope: name`` (bools and non-whole numbers for an int are refused)."""
    whole = isinstance(value, float) and value.is_integer()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{scope}: {name} must be a number, got {value!r}")
    if isinstance(default, int):
        if not (isinstance(value, int) or whole):
            raise InvalidInput(f"{scope}: {name} must be a whole number, got {value!r}")
        return int(value)
    return float(value)
