"""Delivery operations for the admin API: policies, rollouts and rollback, over the registry.

Every method runs the blocking registry call in a worker thread and returns plain JSON-ready
data; the decisions themselves live in :class:`pitstop.registry.Delivery`, which the CLI calls
too. A running server (this one and every replica) applies the change at its next registry poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pitstop.errors import NotFound
from pitstop.registry import Registry, Rollout, TrafficPolicy
from pitstop.serving.dataplane import DataPlane
from pitstop.serving.rollout import Guard


def rollout_json(rollout: Rollout | None) -> dict[str, Any] | None:
    if rollout is None:
        return None
    body = asdict(rollout)
    for key in ("started_at", "step_started_at", "updated_at"):
        body[key] = body[key].isoformat()
    body["weight"] = rollout.weight
    return body


class Operations:
    def __init__(self, registry: Registry, dataplane: DataPlane) -> None:
        self._registry = registry
        self._dataplane = dataplane

    async def traffic(self, model: str) -> dict[str, Any]:
        """Policy, current or last rollout, and what this server observed of fallbacks and
        shadows for ``model``."""
        delivery = self._registry.delivery
        policy = await asyncio.to_thread(delivery.policy, model)
        rollouts = await asyncio.to_thread(delivery.rollouts, model)
        shadows = {
            target: comparison.to_json()
            for (name, target), comparison in self._dataplane.shadows.comparisons.items()
            if name == model
        }
        return {
            "model": model,
            "policy": policy.to_json(),
            "rollout": rollout_json(rollouts[0] if rollouts else None),
            "fallbacks": {
                reason: count
                for (name, reason), count in self._dataplane.fallbacks.items()
                if name == model
            },
            "shadows": shadows,
            "shadow_dropped": self._dataplane.shadows.dropped.get(model, 0),
        }

    async def set_policy(
        self, model: str, body: Mapping[str, Any], actor: str, reason: str | None
    ) -> dict[str, Any]:
        policy = TrafficPolicy.from_json(body)
        await asyncio.to_thread(
            self._registry.delivery.set_policy, model, policy, actor=actor, reason=reason
        )
        return policy.to_json()

    async def deploy(
        self,
        model: str,
        version: int,
        steps: Sequence[float],
        interval_s: float,
        guard: Mapping[str, Any],
        actor: str,
        reason: str | None,
    ) -> dict[str, Any] | None:
        checked = Guard.from_json(guard)
        rollout = await asyncio.to_thread(
            self._registry.delivery.start_rollout,
            model,
            version,
            steps=list(steps),
            interval_s=interval_s,
            guard=checked.to_json(),
            actor=actor,
            reason=reason,
        )
        return rollout_json(rollout)

    async def rollout_action(
        self, model: str, verb: str, actor: str, reason: str | None
    ) -> dict[str, Any] | None:
        delivery = self._registry.delivery
        active = await asyncio.to_thread(delivery.active_rollout, model)
        if active is None:
            raise NotFound(f"model {model!r} has no active rollout")
        updated = await asyncio.to_thread(
            delivery.advance, active.id, verb, actor=actor, reason=reason
        )
        return rollout_json(updated)

    async def rollback(self, model: str, actor: str, reason: str | None) -> int:
        return await asyncio.to_thread(
            self._registry.delivery.rollback, model, actor=actor, reason=reason
        )
