"""Traffic policies as data: weighted arms, shadow targets, a sticky header and a fallback.

A model's policy lives in the registry and every change is audited (``policy.set``, with the
whole policy before and after). Targets are alias names (``production``) or version numbers
(``"4"``). The default policy sends 100% to ``production``. Choosing an arm per request is
:mod:`pitstop.serving.traffic`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TrafficPolicy:
    arms: tuple[Arm, ...] = (Arm(DEFAULT_TARGET, 100.0),)
    shadows: tuple[Shadow, ...] = ()
    sticky_header: str | None = None
    """Request header whose value keeps a user on one arm (e.g. ``x-user-id``)."""
    fallback: str | None = None
    """Answers when the chosen arm errors, is overloaded or misses the deadline."""

    def __post_init__(self) -> None:
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

    @property
    def is_default(self) -> bool:
        return self == TrafficPolicy()

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
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None) -> TrafficPolicy:
        if not body:
            return cls()
        try:
            return cls(
                arms=tuple(Arm(str(a["target"]), float(a["weight"])) for a in body["arms"]),
                shadows=tuple(
                    Shadow(str(s["target"]), float(s["rate"])) for s in body.get("shadows", ())
                ),
                sticky_header=body.get("sticky_header"),
                fallback=body.get("fallback"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"traffic policy: malformed ({exc})") from exc
