"""Is arm b better than arm a? A verdict that stays valid however often it is asked. Pure.

An A/B experiment is looked at again and again while feedback arrives. A fixed-sample test
checked at every look declares a winner between identical arms far more often than its alpha
(20 looks at a 5% z-test: about 25%), so verdicts here come from the mixture sequential
probability ratio test (mSPRT; Johari, Pekelis & Walsh, "Always valid inference", 2017/2022)
with a normal mixture N(0, tau^2) over the effect. On the observations ``x`` of
:mod:`pitstop.monitoring.outcome`::

    theta = mean_b - mean_a        V = var_a / n_a + var_b / n_b      (plug-in variances)
    Lambda = sqrt(V / (V + tau^2)) * exp(theta^2 tau^2 / (2 V (V + tau^2)))
    p = min(1, 1 / Lambda)
    CI = theta +- sqrt(V (V + tau^2) / tau^2 * (2 ln(1 / alpha) + ln((V + tau^2) / V)))

``p < alpha`` exactly when the interval excludes 0, and under "no difference" the chance that
*any* look ever gets there is at most alpha. Lambda is computed in log space. ``tau`` is the
minimum detectable effect ``Design.mde`` on the scale of ``x``.

Scales: the test runs on ``x``; the difference is reported on the metric's own scale as b - a.
ERROR_RATE tests accuracy and reports the difference of error rates (sign and bounds flipped).
RMSE tests the mean squared error; its MDE ``d`` becomes ``2 rmse_a d + d^2`` on that scale, and
the MSE difference and its bounds are reported through ``t -> sqrt(mse_a + t) - rmse_a`` (a's MSE
held at its estimate): monotone and 0 at 0, so the RMSE interval excludes 0 exactly when the MSE
interval does, and the point is exactly ``rmse_b - rmse_a``. (The delta method would not keep
that agreement.)

Verdicts, in order: fewer than ``min_samples`` in an arm → NO_VERDICT; ``p < alpha`` → BETTER or
WORSE for b (lower is better for error rate, MAE and RMSE); at least :func:`required_per_arm`
observations per arm → NO_DIFFERENCE; else NO_VERDICT with the observations still ``needed``.
The per-arm estimates in a :class:`Comparison` carry ordinary (one-look) intervals.

:func:`non_inferior` is the rollout guard: is a canary at worst ``margin`` worse than its
baseline, with the same always-valid interval?
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

from pitstop.errors import InvalidInput
from pitstop.monitoring.outcome import (
    Estimate,
    Metric,
    Tally,
    estimate,
    finite_or_none,
    setting_number,
)

MAX_PER_ARM = 10**9
"""What :func:`required_per_arm` answers when no smaller sample would do."""

ZERO_MARGIN_TAU = 0.01
"""The mixture's tau of :func:`non_inferior` when its margin is 0 (on the metric's scale)."""


class Verdict(enum.StrEnum):
    BETTER = "better"
    WORSE = "worse"
    NO_DIFFERENCE = "no difference"
    NO_VERDICT = "no verdict yet"


@dataclass(frozen=True)
class Design:
    """How an experiment is judged."""

    alpha: float = 0.05
    """Chance of declaring a difference between identical arms, over every look taken."""
    power: float = 0.8
    """Chance of declaring a true difference of ``mde`` once :func:`required_per_arm` is met."""
    mde: float = 0.02
    """Minimum detectable effect: the smallest difference worth finding, absolute, on the
    metric's scale (0.02 = 2 points of accuracy). Also the mixture's tau."""
    min_samples: int = 100
    """Observations each arm needs before any verdict."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise InvalidInput(f"design: alpha must be between 0 and 1, got {self.alpha}")
        if not 0.0 < self.power < 1.0:
            raise InvalidInput(f"design: power must be between 0 and 1, got {self.power}")
        if not (math.isfinite(self.mde) and self.mde > 0.0):
            raise InvalidInput(f"design: mde must be a positive number, got {self.mde}")
        if self.min_samples < 2:
            raise InvalidInput(f"design: min_samples must be at least 2, got {self.min_samples}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None) -> Design:
        body = dict(body or {})
        defaults = cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidInput(f"design: unknown setting {unknown[0]!r}; known: {sorted(known)}")
        values = {
            key: setting_number("design", key, getattr(defaults, key), value)
            for key, value in body.items()
        }
        return cls(**values)


@dataclass(frozen=True)
class Comparison:
    """b against a on ``metric``. ``difference`` (b - a on the metric's scale) with its
    always-valid interval ``[low, high]`` at confidence 1 - alpha and the always-valid
    ``p_value``; NaN where an arm has no data."""

    metric: Metric
    a: Estimate
    b: Estimate
    difference: float
    low: float
    high: float
    p_value: float
    needed: int
    """Further observations per arm before "no difference" could be said (0 once enough are in,
    and 0 after BETTER or WORSE)."""
    verdict: Verdict
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric.value,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "difference": finite_or_none(self.difference),
            "low": finite_or_none(self.low),
            "high": finite_or_none(self.high),
            "p_value": finite_or_none(self.p_value),
            "needed": self.needed,
            "verdict": self.verdict.value,
            "reason": self.reason,
        }


class Standing(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True)
class NonInferiority:
    """The canary's improvement over the baseline (canary - baseline, sign flipped where lower
    is better: negative means worse) with its always-valid interval, and the standing."""

    standing: Standing
    difference: float
    low: float
    high: float
    reason: str


def log_lambda(theta: float, variance: float, tau2: float) -> float:
    """ln Lambda of the normal-mixture mSPRT: effect ``theta``, its variance, mixture tau^2."""
    total = variance + tau2
    return 0.5 * (math.log(variance) - math.log(total)) + theta * theta / (2.0 * variance) * (
        tau2 / total
    )


def _half_width(variance: float, tau2: float, alpha: float) -> float:
    total = variance + tau2
    spread = variance * total / tau2
    return math.sqrt(spread * (2.0 * math.log(1.0 / alpha) + math.log(total / variance)))


def _x_effect(metric: Metric, effect: float, a: Tally) -> float:
    """An effect on the metric's scale as an effect on the scale of x."""
    if metric is not Metric.RMSE:
        return effect
    rmse = math.sqrt(a.mean) if a.n else 0.0
    return 2.0 * rmse * effect + effect * effect


def _sequential(
    metric: Metric, a: Tally, b: Tally, tau2: float, alpha: float
) -> tuple[float, float, float, float]:
    """(difference, low, high, p) of b - a on the metric's scale; NaN when unknown."""
    binary = metric.proportion
    theta = b.mean - a.mean
    variance = a.variance(binary) / a.n + b.variance(binary) / b.n if a.n and b.n else math.nan
    if not (math.isfinite(theta) and math.isfinite(variance)):
        return math.nan, math.nan, math.nan, math.nan
    p = math.exp(-max(0.0, log_lambda(theta, variance, tau2)))
    half = _half_width(variance, tau2, alpha)
    low, high = theta - half, theta + half
    if metric is Metric.ERROR_RATE:
        return -theta, -high, -low, p
    if metric is Metric.RMSE:
        base = a.mean

        def to_rmse(t: float) -> float:
            return math.sqrt(max(0.0, base + t)) - math.sqrt(base)

        return to_rmse(theta), to_rmse(low), to_rmse(high), p
    return theta, low, high, p


def required_per_arm(metric: Metric, a: Tally, b: Tally, design: Design) -> int:
    """The smallest per-arm sample (equal allocation, today's plug-in variances) at which a true
    effect of exactly ``design.mde`` would be declared with probability ``design.power``: the
    smallest n with Lambda(theta) >= 1/alpha at theta = mde - z_power sqrt(V_n), V_n =
    (var_a + var_b) / n. :data:`MAX_PER_ARM` when none smaller will do; ``design.min_samples``
    while a variance is still unknown (an arm of a non-proportion metric with under two
    observations)."""
    binary = metric.proportion
    spread = a.variance(binary) + b.variance(binary)
    if not math.isfinite(spread):
        return design.min_samples
    effect = _x_effect(metric, design.mde, a)
    tau2 = effect * effect
    z = NormalDist().inv_cdf(design.power)
    threshold = math.log(1.0 / design.alpha)

    def enough(n: int) -> bool:
        variance = spread / n
        theta = max(0.0, effect - z * math.sqrt(variance))
        return log_lambda(theta, variance, tau2) >= threshold

    low, high = 0, 1
    while not enough(high):
        if high >= MAX_PER_ARM:
            return MAX_PER_ARM
        low, high = high, min(2 * high, MAX_PER_ARM)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def compare(metric: Metric, a: Tally, b: Tally, design: Design) -> Comparison:
    """The verdict on b against a (see the module docstring for the rules)."""
    effect = _x_effect(metric, design.mde, a)
    difference, low, high, p = _sequential(metric, a, b, effect * effect, design.alpha)
    confidence = 1.0 - design.alpha
    both = (estimate(metric, a, confidence), estimate(metric, b, confidence))
    seen = min(a.n, b.n)
    required = max(required_per_arm(metric, a, b, design), design.min_samples)
    needed = max(0, required - seen)
    said = _describe(metric, difference, low, high, confidence)
    if seen < design.min_samples:
        verdict = Verdict.NO_VERDICT
        reason = f"no verdict yet: {seen} of {design.min_samples} observations per arm"
    elif p < design.alpha:
        better = (difference > 0) == metric.higher_is_better
        verdict = Verdict.BETTER if better else Verdict.WORSE
        reason = f"b is {verdict.value}: {said}, {_p(p)}"
        needed = 0
    elif needed == 0:
        verdict = Verdict.NO_DIFFERENCE
        reason = (
            f"no difference: {said}, {_p(p)}; {seen} per arm would have found "
            f"{_amount(metric, design.mde)} with {design.power:.0%} power"
        )
    else:
        verdict = Verdict.NO_VERDICT
        reason = (
            f"no verdict yet: {said}, {_p(p)}; {needed} more per arm to tell "
            f"{_amount(metric, design.mde)} apart with {design.power:.0%} power"
        )
    return Comparison(metric, *both, difference, low, high, p, needed, verdict, reason)


def non_inferior(
    metric: Metric,
    baseline: Tally,
    canary: Tally,
    margin: float,
    alpha: float,
    min_samples: int,
) -> NonInferiority:
    """PASS when the canary is, with confidence 1 - alpha at any look, at worst ``margin`` (on
    the metric's scale) worse than the baseline; FAIL when it is surely worse by more; WAIT
    before ``min_samples`` per arm or while the interval straddles ``-margin``. The mixture's
    tau is the margin (:data:`ZERO_MARGIN_TAU` for a zero margin)."""
    if not (math.isfinite(margin) and margin >= 0.0):
        raise InvalidInput(f"margin must be a number >= 0, got {margin}")
    if not 0.0 < alpha < 1.0:
        raise InvalidInput(f"alpha must be between 0 and 1, got {alpha}")
    if min_samples < 2:
        raise InvalidInput(f"min_samples must be at least 2, got {min_samples}")
    effect = _x_effect(metric, margin or ZERO_MARGIN_TAU, baseline)
    difference, low, high, _ = _sequential(metric, baseline, canary, effect * effect, alpha)
    if metric.higher_is_better:
        better, lowest, highest = difference, low, high
    else:
        better, lowest, highest = -difference, -high, -low
    seen = min(baseline.n, canary.n)
    said = _describe(metric, difference, low, high, 1.0 - alpha)
    allowed = f"the margin allows {_amount(metric, margin)} worse"
    if seen < min_samples:
        standing = Standing.WAIT
        reason = f"waiting: {seen} of {min_samples} observations per arm"
    elif highest < -margin:
        standing = Standing.FAIL
        reason = f"canary is worse than the margin: {said} against the baseline; {allowed}"
    elif lowest > -margin:
        standing = Standing.PASS
        reason = f"canary is within the margin: {said} against the baseline; {allowed}"
    else:
        standing = Standing.WAIT
        reason = f"not yet clear: {said} against the baseline; {allowed}"
    return NonInferiority(standing, better, lowest, highest, reason)


def _amount(metric: Metric, size: float) -> str:
    """An unsigned amount on the metric's scale: points for proportions."""
    if metric.proportion:
        return f"{100.0 * size:.1f} points"
    return f"{size:.4g}"


def _signed(metric: Metric, value: float) -> str:
    return f"{100.0 * value:+.1f}" if metric.proportion else f"{value:+.4g}"


def _describe(metric: Metric, difference: float, low: float, high: float, confidence: float) -> str:
    """E.g. "accuracy +5.1 points (95% CI +3.2 to +7.0)", b - a."""
    if not math.isfinite(difference):
        return f"{metric.value} difference unknown"
    unit = " points" if metric.proportion else ""
    return (
        f"{metric.value} {_signed(metric, difference)}{unit} ({confidence:.0%} CI "
        f"{_signed(metric, low)} to {_signed(metric, high)})"
    )


def _p(p: float) -> str:
    return "p<0.0001" if p < 0.0001 else f"p={p:.2g}"
