"""Choosing the version that answers a request, and the shadows that get a copy. Pure.

``choose()`` takes the policy, an optional sticky key and a uniform number ``u`` in [0, 1). With a
sticky key the number comes from a stable hash of the key instead, so one user always lands on
the same arm for as long as the weights stay the same — on every replica and across restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pitstop.registry import TrafficPolicy


def sticky_number(key: str) -> float:
    """A stable number in [0, 1) for a sticky key."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose(policy: TrafficPolicy, key: str | None, u: float) -> str:
    """The target that serves a request: by the sticky key's hash when there is one, else by
    ``u``."""
    point = (sticky_number(key) if key is not None else u) * 100.0
    cumulative = 0.0
    live = [arm for arm in policy.arms if arm.weight > 0]
    for arm in live:
        cumulative += arm.weight
        if point < cumulative:
            return arm.target
    return live[-1].target


def shadows_for(policy: TrafficPolicy, primary: str, draws: Sequence[float]) -> list[str]:
    """Shadow targets that get a copy of this request: each shadow with its own draw, never the
    target that already answers it."""
    return [
        shadow.target
        for shadow, u in zip(policy.shadows, draws, strict=False)
        if shadow.target != primary and u < shadow.rate
    ]
