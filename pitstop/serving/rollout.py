"""The rollout judge: a pure verdict on a canary step from two windows of observations.

``judge(canary, baseline, guard, last_step)`` returns STEP_UP, HOLD, PROMOTE or ROLL_BACK with a
reason. In order:

1. overwhelming errors roll back at once, even before ``min_requests``: at least
   ``min_errors`` errors and an error rate above ``max_error_rate``;
2. fewer than ``min_requests`` canary requests: HOLD (not enough evidence);
3. error rate above ``max_error_rate`` (and above the baseline's): ROLL_BACK;
4. canary p99 above ``max_p99_ratio`` x baseline p99 (ignored while the canary's p99 is under
   ``latency_floor_ms``, where ratios are noise, or the baseline has fewer than
   ``min_requests``): ROLL_BACK;
5. output divergence (PSI of the canary's predictions against the baseline's, both with at least
   ``min_requests`` and ``min_predictions`` observations) above ``max_divergence``: ROLL_BACK;
6. with an outcome guard (``outcome_metric``): the canary's outcome (feedback joined to
   predictions made since the rollout began) surely worse than the baseline's by more than
   ``outcome_margin`` (always-valid interval, :func:`~pitstop.serving.comparison.non_inferior`):
   ROLL_BACK at any step; HOLD at any step until each arm has ``outcome_min_samples``
   feedback; and before the canary takes all traffic (``decisive``: the step to 100% or the
   promotion, while the baseline still gets traffic to compare with) HOLD until it is surely
   within the margin, up to ``outcome_timeout_s`` after which ``outcome_on_timeout`` holds or
   rolls back;
7. otherwise PROMOTE at the last step, else STEP_UP.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pitstop.monitoring.drift import sample_psi
from pitstop.monitoring.outcome import Metric, Tally
from pitstop.registry.rollouts import Guard
from pitstop.serving.comparison import Standing, non_inferior

NO_FEEDBACK: Final = Tally()


class Verdict(enum.StrEnum):
    STEP_UP = "STEP_UP"
    HOLD = "HOLD"
    PROMOTE = "PROMOTE"
    ROLL_BACK = "ROLL_BACK"


@dataclass(frozen=True)
class ArmWindow:
    """What one arm did during the step being judged."""

    requests: int
    errors: int
    p99_ms: float
    predictions: Sequence[float] = ()
    """One number per answered row (a label, a score, or an argmax class)."""
    outcome: Tally = NO_FEEDBACK
    """Feedback of the guard's outcome metric on this arm's predictions since the rollout
    began (empty without an outcome guard)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str


def judge(
    canary: ArmWindow,
    baseline: ArmWindow,
    guard: Guard,
    last_step: bool,
    waited_s: float = 0.0,
    decisive: bool | None = None,
) -> Judgement:
    """The verdict on a step; ``waited_s``: time since the step began (for the outcome
    guard's timeout); ``decisive``: the next move gives the canary all traffic (default:
    ``last_step``)."""
    rate = canary.error_rate
    if canary.errors >= guard.min_errors and rate > guard.max_error_rate:
        return Judgement(
            Verdict.ROLL_BACK,
            f"error rate {rate:.1%} over {canary.requests} requests > {guard.max_error_rate:.1%}",
        )
    if canary.requests < guard.min_requests:
        return Judgement(
            Verdict.HOLD, f"{canary.requests} of {guard.min_requests} requests needed to judge"
        )
    if rate > guard.max_error_rate and rate > baseline.error_rate:
        return Judgement(Verdict.ROLL_BACK, f"error rate {rate:.1%} > {guard.max_error_rate:.1%}")
    if (
        canary.p99_ms > guard.latency_floor_ms
        and baseline.requests >= guard.min_requests
        and baseline.p99_ms > 0
        and canary.p99_ms > guard.max_p99_ratio * baseline.p99_ms
    ):
        return Judgement(
            Verdict.ROLL_BACK,
            f"p99 {canary.p99_ms:.1f} ms > {guard.max_p99_ratio:g} x baseline "
            f"{baseline.p99_ms:.1f} ms",
        )
    needed = max(guard.min_requests, guard.min_predictions)
    enough = min(len(canary.predictions), len(baseline.predictions)) >= needed
    if enough:
        divergence = sample_psi(baseline.predictions, canary.predictions)
        if divergence > guard.max_divergence:
            return Judgement(
                Verdict.ROLL_BACK,
                f"prediction divergence PSI {divergence:.3f} > {guard.max_divergence:g}",
            )
    if guard.outcome_metric:
        held = _outcome(
            canary, baseline, guard, last_step if decisive is None else decisive, waited_s
        )
        if held is not None:
            return held
    if last_step:
        return Judgement(Verdict.PROMOTE, "all guards held at the last step")
    return Judgement(Verdict.STEP_UP, "all guards held")


def _outcome(
    canary: ArmWindow, baseline: ArmWindow, guard: Guard, decisive: bool, waited_s: float
) -> Judgement | None:
    """The outcome guard's say, or None when it lets the step go on."""
    metric = Metric(guard.outcome_metric)
    found = non_inferior(
        metric, baseline.outcome, canary.outcome, guard.outcome_margin, guard.outcome_alpha,
        guard.outcome_min_samples,
    )  # fmt: skip
    if found.standing is Standing.FAIL:
        return Judgement(Verdict.ROLL_BACK, f"outcome {metric.value}: {found.reason}")
    if found.standing is Standing.PASS:
        return None
    seen = min(canary.outcome.n, baseline.outcome.n)
    if not decisive and seen >= guard.outcome_min_samples:
        return None
    timeout = guard.outcome_timeout_s
    if timeout and waited_s >= timeout:
        if guard.outcome_on_timeout == "rollback":
            return Judgement(
                Verdict.ROLL_BACK,
                f"outcome {metric.value}: no verdict after {timeout:g} s ({found.reason})",
            )
        return Judgement(
            Verdict.HOLD,
            f"outcome {metric.value}: no verdict after {timeout:g} s, holding for a person "
            f"({found.reason})",
        )
    return Judgement(Verdict.HOLD, f"outcome {metric.value}: {found.reason}")
