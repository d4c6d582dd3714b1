"""Traffic policies as data: weighted arms, shadow targets, a sticky header and a fallback.

A model's policy lives in the registry and every change is audited (``policy.set``, with the
whole policy before and after). Targets are alias names (``production``) or version numbers
(``"4"``). The default policy sends 100% to ``production``. Choosing an arm per request is
:mod:`pitstop.serving.traffic`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pitstop.errors import InvalidInput

DEFAULT_TARGET = "production"
_TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


@dataclass(frozen=True)
class Arm:
    target: str
    weight: float
    """Share of traffic, in percent (all arms of a policy add up to 100)."""


@dataclass(frozen=True)
class Shadow:
    target: str
    rate: float
    """Fraction of requests (0..1] copied to the shadow target."""


BANDIT_METRICS = ("conversion", "mean_reward")
LOAD_POLICIES = ("always", "on-demand")


@dataclass(frozen=True)
class Bandit:
    """Opt-in: the bandit controller moves the arms' weights by Thompson sampling over the
    rewards fed back for each arm (``pitstop.serving.bandit``); every move is a ``policy.set``
    in the history."""

    metric: str = "conversion"
    """``conversion`` (a reward above 0 is a success) or ``mean_reward``."""
    min_share: float = 5.0
    """Percent of traffic every arm keeps, however badly it does (exploration)."""
    max_step: float = 10.0
    """Percentage points a weight may move per update."""
    interval_s: float = 10.0
    """Seconds between updates."""
    window_s: float = 86_400.0
    """Rewards of predictions made in this many seconds before an update count."""

    def __post_init__(self) -> None:
        if self.metric not in BANDIT_METRICS:
            raise InvalidInput(f"bandit.metric: one of {list(BANDIT_METRICS)}, got {self.metric!r}")
        if not 0 <= self.min_share < 50:
            raise InvalidInput(f"bandit.min_share: percent in [0, 50), got {self.min_share:g}")
        if not 0 < self.max_step <= 100:
            raise InvalidInput(
                f"bandit.max_step: percentage points in (0, 100], got {self.max_step:g}"
            )
        if not 0.1 <= self.interval_s <= 86_400:
            raise InvalidInput(
                f"bandit.interval_s: seconds in [0.1, 86400], got {self.interval_s:g}"
            )
        if not self.window_s > 0:
            raise InvalidInput(f"bandit.window_s: seconds > 0, got {self.window_s:g}")

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "min_share": self.min_share, "max_step": self.max_step,
            "interval_s": self.interval_s, "window_s": self.window_s,
        }  # fmt: skip

    @classmethod
    def from_json(cls, body: Any) -> Bandit:
        if not isinstance(body, Mapping):
            raise InvalidInput("bandit: an object with metric, min_share, max_step, interval_s")
        known = set(cls().to_json())
        unknown = sorted(set(body) - known)
        if unknown:
            raise InvalidInput(f"bandit.{unknown[0]}: unknown setting; known: {sorted(known)}")
        try:
            values = {k: (str(v) if k == "metric" else float(v)) for k, v in body.items()}
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"bandit: {exc}") from exc
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrafficPolicy:
    arms: tuple[Arm, ...] = (Arm(DEFAULT_TARGET, 100.0),)
    shadows: tuple[Shadow, ...] = ()
    sticky_header: str | None = None
    """Request header whose value keeps a user on one arm (e.g. ``x-user-id``)."""
    fallback: str | None = None
    """Answers when the chosen arm errors, is overloaded or misses the deadline."""
    bandit: Bandit | None = None
    """Weights moved by the bandit controller (None: weights stay as set)."""
    load: str | None = None
    """``always`` (load every aliased version at start and keep it) or ``on-demand`` (load a
    version at the first request that needs it, evict it when memory is needed); None: the
    server's ``PITSTOP_LOAD_POLICY``. Not a routing choice: :attr:`is_default` ignores it."""

    def __post_init__(self) -> None:
        if self.load is not None and self.load not in LOAD_POLICIES:
            raise InvalidInput(
                f"traffic policy: load must be one of {list(LOAD_POLICIES)}, got {self.load!r}"
            )
        if self.sticky_header is not None:
            object.__setattr__(self, "sticky_header", self.sticky_header.lower())
        if not self.arms:
            raise InvalidInput("traffic policy: at least one arm is needed")
        total = sum(arm.weight for arm in self.arms)
        if any(arm.weight < 0 for arm in self.arms) or abs(total - 100.0) > 1e-6:
            raise InvalidInput(
                f"traffic policy: weights must be >= 0 and add up to 100, got {total:g}"
            )
        if len({arm.target for arm in self.arms}) != len(self.arms):
            raise InvalidInput("traffic policy: each target may appear in one arm only")
        for shadow in self.shadows:
            if not 0 < shadow.rate <= 1:
                raise InvalidInput(
                    f"traffic policy: shadow rate must be in (0, 1], got {shadow.rate}"
                )
        for target in self.targets():
            if not _TARGET.fullmatch(target):
                raise InvalidInput(f"traffic policy: {target!r} is not an alias or version number")
        if self.sticky_header is not None and not _HEADER.fullmatch(self.sticky_header):
            raise InvalidInput(f"traffic policy: {self.sticky_header!r} is not a header name")
        if self.bandit is not None:
            if len(self.arms) < 2:
                raise InvalidInput("traffic policy: a bandit needs at least two arms")
            if len(self.arms) * self.bandit.min_share > 100:
                raise InvalidInput(
                    f"traffic policy: {len(self.arms)} arms cannot each keep "
                    f"{self.bandit.min_share:g}% (bandit.min_share)"
                )

    @property
    def is_default(self) -> bool:
        """Routing-wise the default policy (100% production); the load policy may be set."""
        return replace(self, load=None) == TrafficPolicy()

    def targets(self) -> set[str]:
        """Every alias or version the policy may send traffic to."""
        found = {arm.target for arm in self.arms if arm.weight > 0}
        found |= {shadow.target for shadow in self.shadows}
        if self.fallback:
            found.add(self.fallback)
        return found

    def weight_of(self, target: str) -> float:
        return next((arm.weight for arm in self.arms if arm.target == target), 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "arms": [{"target": a.target, "weight": a.weight} for a in self.arms],
            "shadows": [{"target": s.target, "rate": s.rate} for s in self.shadows],
            "sticky_header": self.sticky_header,
            "fallback": self.fallback,
            **({"bandit": self.bandit.to_json()} if self.bandit is not None else {}),
            **({"load": self.load} if self.load is not None else {}),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None) -> TrafficPolicy:
        if not body:
            return cls()
        if "arms" not in body and "load" not in body:
            raise InvalidInput("traffic policy: malformed ('arms' is required)")
        try:
            return cls(
                arms=tuple(Arm(str(a["target"]), float(a["weight"])) for a in body["arms"])
                if "arms" in body
                else (Arm(DEFAULT_TARGET, 100.0),),
                shadows=tuple(
                    Shadow(str(s["target"]), float(s["rate"])) for s in body.get("shadows", ())
                ),
                sticky_header=body.get("sticky_header"),
                fallback=body.get("fallback"),
                bandit=Bandit.from_json(body["bandit"]) if body.get("bandit") else None,
                load=body.get("load"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"traffic policy: malformed ({exc})") from exc
