"""Bandit routing: traffic weights that follow the arm most likely to be best. Pure.

:func:`thompson_weights` is one update of the weights (percent) of a traffic policy's arms from
each arm's :class:`~pitstop.monitoring.outcome.Tally` of rewards:

1. P(arm is best), by Monte Carlo over the posteriors of the arms' mean reward (``draws``
   joint draws; the arm with the largest draw wins each):

   * CONVERSION (x is 1 for a positive reward, else 0): Beta(1 + successes, 1 + failures);
   * MEAN_REWARD: Normal(m, s^2 / (n + 1)) where m shrinks the arm's mean towards the mean of
     all arms by one pseudo-observation and s^2 is the arm's variance shrunk the same way
     towards the variance of all arms (1 while there is none). The prior is taken from the
     data, so it is as weak as one observation on any reward scale.

   An arm without a tally has no data: its posterior is the prior.
2. The target is 100 x P, water-filled to the floor: arms under ``min_share`` are raised to it
   and the rest scaled down in proportion, until no arm is under (the sum stays 100).
3. The weights move from ``current`` towards the target, the whole change scaled so that no arm
   moves more than ``max_step`` points. Both ends respect the floor and sum to 100, so every
   point between does too. A ``current`` that does not (an arm under the floor, a sum other
   than 100) is replaced by the target outright.
4. Weights are rounded to hundredths of a percent that add up to exactly 10,000 (the rounding
   remainder goes to the largest arm); keys keep the order of ``current``.

The caller owns ``rng`` and the clock (``interval_s`` says how often it should call). One update
costs O(draws x arms).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from pitstop.errors import InvalidInput
from pitstop.monitoring.outcome import Metric, Tally, setting_number

Vector = npt.NDArray[np.float64]

METRICS = (Metric.CONVERSION, Metric.MEAN_REWARD)
"""The metrics a bandit can maximise."""

SLACK = 0.005
"""How far under the floor (or off 100 in sum) a current weight may be and still count as
respecting it: half a hundredth, what rounding to hundredths can cost."""


@dataclass(frozen=True)
class BanditSettings:
    """How a bandit routes. Validated on construction; :func:`check` adds the arm count."""

    metric: Metric = Metric.CONVERSION
    """CONVERSION (binary rewards, Beta posteriors) or MEAN_REWARD (Normal posteriors)."""
    min_share: float = 5.0
    """Percent of traffic every arm keeps, however bad it looks (exploration never stops)."""
    max_step: float = 10.0
    """Percentage points a weight may move in one update."""
    interval_s: float = 10.0
    """Seconds between updates."""
    draws: int = 4000
    """Monte Carlo draws per update."""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InvalidInput(
                f"bandit: metric must be one of {[m.value for m in METRICS]}, got {self.metric!r}"
            )
        if not 0.0 <= self.min_share < 100.0:
            raise InvalidInput(f"bandit: min_share must be in [0, 100), got {self.min_share}")
        if not 0.0 < self.max_step <= 100.0:
            raise InvalidInput(f"bandit: max_step must be in (0, 100], got {self.max_step}")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0.0):
            raise InvalidInput(f"bandit: interval_s must be positive, got {self.interval_s}")
        if self.draws < 1:
            raise InvalidInput(f"bandit: draws must be at least 1, got {self.draws}")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"metric": self.metric.value}

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None) -> BanditSettings:
        body = dict(body or {})
        defaults = cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidInput(f"bandit: unknown setting {unknown[0]!r}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key == "metric":
                values[key] = Metric.parse(value) if isinstance(value, str) else value
            else:
                values[key] = setting_number("bandit", key, getattr(defaults, key), value)
        return cls(**values)


def check(settings: BanditSettings, arms: int) -> None:
    """InvalidInput unless ``arms`` arms can each keep ``min_share`` percent."""
    if arms < 1:
        raise InvalidInput("bandit: a bandit needs at least one arm")
    if arms * settings.min_share > 100.0:
        raise InvalidInput(
            f"bandit: min_share {settings.min_share}% for {arms} arms is more than 100%"
        )


def thompson_weights(
    tallies: Mapping[str, Tally],
    current: Mapping[str, float],
    settings: BanditSettings,
    rng: np.random.Generator,
) -> dict[str, float]:
    """The next weights (percent) of the arms named by ``current`` (see the module docstring)."""
    arms = list(current)
    if not arms:
        return {}
    check(settings, len(arms))
    data = [tallies.get(arm, Tally()) for arm in arms]
    best = _chance_best(data, settings, rng)
    target = water_fill(100.0 * best, settings.min_share)
    now = np.array([float(current[arm]) for arm in arms])
    if _respects(now, settings.min_share):
        change = target - now
        largest = float(np.abs(change).max())
        step = now + change * min(1.0, settings.max_step / largest) if largest > 0 else now
    else:
        step = target
    return dict(zip(arms, _hundredths(step), strict=True))


def _chance_best(data: list[Tally], settings: BanditSettings, rng: np.random.Generator) -> Vector:
    """P(each arm has the largest mean reward), from ``settings.draws`` posterior draws."""
    n = np.array([tally.n for tally in data], dtype=np.float64)
    total = np.array([tally.total for tally in data], dtype=np.float64)
    shape = (settings.draws, len(data))
    if settings.metric is Metric.CONVERSION:
        draws = rng.beta(1.0 + total, 1.0 + np.maximum(n - total, 0.0), size=shape)
    else:
        everything = sum(data, Tally())
        prior_mean = everything.mean if everything.n else 0.0
        prior_variance = everything.variance()
        if not math.isfinite(prior_variance):
            prior_variance = 1.0
        squares = np.array([tally.squares for tally in data], dtype=np.float64)
        deviations = np.maximum(squares - np.divide(total * total, n, where=n > 0, out=n * 0), 0)
        mean = (total + prior_mean) / (n + 1.0)
        variance = (deviations + prior_variance) / (np.maximum(n - 1.0, 0.0) + 1.0)
        draws = rng.normal(mean, np.sqrt(variance / (n + 1.0)), size=shape)
    wins = np.bincount(np.argmax(draws, axis=1), minlength=len(data))
    return wins / settings.draws


def water_fill(shares: Vector, floor: float) -> Vector:
    """``shares`` (summing to 100) with every entry at least ``floor``: entries under it are raised
    to it and the others scaled down in proportion, repeated until none is under. Needs
    ``len(shares) * floor <= 100``."""
    fixed = np.zeros(len(shares), dtype=bool)
    while True:
        free = ~fixed
        budget = 100.0 - floor * int(fixed.sum())
        mass = float(shares[free].sum())
        out = np.full(len(shares), floor)
        out[free] = shares[free] * (budget / mass) if mass > 0 else budget / int(free.sum())
        under = free & (out < floor)
        if not under.any():
            return out
        fixed |= under


def _respects(weights: Vector, floor: float) -> bool:
    return bool(
        np.isfinite(weights).all()
        and (weights >= floor - SLACK).all()
        and abs(float(weights.sum()) - 100.0) <= SLACK * len(weights)
    )


def _hundredths(weights: Vector) -> list[float]:
    """``weights`` rounded to hundredths that add up to exactly 100.00."""
    cents = np.rint(weights * 100.0).astype(np.int64)
    cents[int(np.argmax(cents))] += 10_000 - int(cents.sum())
    return [int(c) / 100.0 for c in cents]
