"""A rollout as the registry stores it: its guard, its states and the verbs that move it, all
typed values parsed when written (the controller reads them every tick and parses nothing).

States: RUNNING → PROMOTED | ROLLED_BACK | ABORTED, and RUNNING ⇄ PAUSED. At most one rollout
per model is active (RUNNING or PAUSED).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Final

from pitstop.errors import InvalidInput


class RolloutState(enum.StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    PROMOTED = "PROMOTED"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"

    @property
    def active(self) -> bool:
        return self in ACTIVE


ACTIVE: Final = (RolloutState.RUNNING, RolloutState.PAUSED)


class RolloutVerb(enum.StrEnum):
    STEP = "step"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"

    @classmethod
    def parse(cls, value: str) -> RolloutVerb:
        try:
            return cls(value)
        except ValueError:
            names = [verb.value for verb in cls]
            raise InvalidInput(f"unknown rollout action {value!r}; one of {names}") from None


TRANSITIONS: Final[Mapping[RolloutVerb, tuple[frozenset[RolloutState], RolloutState]]] = {
    # verb → (states it may start from, state it leads to)
    RolloutVerb.STEP: (frozenset({RolloutState.RUNNING}), RolloutState.RUNNING),
    RolloutVerb.PROMOTE: (frozenset({RolloutState.RUNNING}), RolloutState.PROMOTED),
    RolloutVerb.ROLLBACK: (frozenset(ACTIVE), RolloutState.ROLLED_BACK),
    RolloutVerb.PAUSE: (frozenset({RolloutState.RUNNING}), RolloutState.PAUSED),
    RolloutVerb.RESUME: (frozenset({RolloutState.PAUSED}), RolloutState.RUNNING),
    RolloutVerb.ABORT: (frozenset(ACTIVE), RolloutState.ABORTED),
}


OUTCOME_METRICS: Final = ("accuracy", "error_rate", "mae", "rmse", "mean_reward", "conversion")


@dataclass(frozen=True)
class Guard:
    """Guard rails of a rollout. Defaults are deliberately tolerant of noise: an identical
    canary must not be rolled back (tests/serving/test_rollout.py checks 50 of 50)."""

    max_error_rate: float = 0.02
    max_p99_ratio: float = 2.0
    max_divergence: float = 0.25
    min_requests: int = 200
    min_predictions: int = 200
    """Predictions each arm needs before divergence is judged (PSI over fewer is noise)."""
    min_errors: int = 10
    latency_floor_ms: float = 20.0
    outcome_metric: str = ""
    """An outcome the canary must not be worse on (accuracy, error_rate, mae, rmse,
    mean_reward, conversion: feedback joined to predictions made since the rollout began);
    "" for none."""
    outcome_margin: float = 0.02
    """How much worse than the baseline the canary may be, on the metric's scale."""
    outcome_alpha: float = 0.05
    outcome_min_samples: int = 200
    """Feedback each arm needs before the outcome is judged."""
    outcome_timeout_s: float = 0.0
    """Seconds the last step waits for an outcome verdict before ``outcome_on_timeout``
    (0: waits for ever)."""
    outcome_on_timeout: str = "hold"
    """``hold`` (stay at the last step for a person) or ``rollback``."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None) -> Guard:
        body = dict(body or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidInput(f"guard: unknown setting {unknown[0]!r}; known: {sorted(known)}")
        try:
            guard = cls(**{k: type(getattr(cls(), k))(v) for k, v in body.items()})
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"guard: {exc}") from exc
        if guard.min_requests < 1 or guard.max_error_rate < 0 or guard.max_p99_ratio <= 0:
            raise InvalidInput("guard: min_requests >= 1, max_error_rate >= 0, max_p99_ratio > 0")
        if guard.outcome_metric and guard.outcome_metric not in OUTCOME_METRICS:
            raise InvalidInput(
                f"guard: outcome_metric {guard.outcome_metric!r} is not one of "
                f"{list(OUTCOME_METRICS)}"
            )
        if guard.outcome_on_timeout not in ("hold", "rollback"):
            raise InvalidInput("guard: outcome_on_timeout is 'hold' or 'rollback'")
        if (
            not 0 < guard.outcome_alpha < 1
            or guard.outcome_margin < 0
            or guard.outcome_min_samples < 2
            or guard.outcome_timeout_s < 0
        ):
            raise InvalidInput(
                "guard: 0 < outcome_alpha < 1, outcome_margin >= 0, outcome_min_samples >= 2, "
                "outcome_timeout_s >= 0"
            )
        return guard


@dataclass(frozen=True)
class Rollout:
    id: int
    model: str
    version: int
    """The canary."""
    baseline: int
    """The production version when the rollout started."""
    steps: tuple[float, ...]
    """Canary weights in percent, e.g. (5, 25, 50, 100)."""
    interval_s: float
    guard: Guard
    step: int
    """Index into ``steps`` of the weight in force."""
    state: RolloutState
    reason: str | None
    started_at: datetime
    step_started_at: datetime
    updated_at: datetime
    created_by: str

    @property
    def weight(self) -> float:
        return self.steps[self.step]

    @property
    def active(self) -> bool:
        return self.state.active

    def to_json(self) -> dict[str, Any]:
        """Every field, times in ISO 8601, and the weight in force."""
        body = asdict(self)
        for key in ("started_at", "step_started_at", "updated_at"):
            body[key] = body[key].isoformat()
        body["weight"] = self.weight
        return body
