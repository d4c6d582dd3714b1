"""The bandit controller: a thin loop that applies
:func:`~pitstop.serving.bandit.thompson_weights` to policies with a ``bandit``.

Every tick, the replica holding the registry lease ``bandit-controller`` reads every policy;
for each with a bandit whose ``interval_s`` has passed since its last update here, it sums the
rewards fed back per arm for predictions made in the bandit's window, computes the next
weights and writes the policy if they moved — only if the policy is still the one it read
(a person's change in between wins), and never while a rollout of the model is active (the
rollout owns the weights then). Each move is a ``policy.set`` in the audit history with the
reason (the rewards and chances behind it). A sticky header keeps working: weights decide
where new keys land.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np

from pitstop.errors import PitstopError
from pitstop.monitoring.outcome import Metric
from pitstop.registry import Arm, Delivery, Outcomes, TrafficPolicy
from pitstop.serving.bandit import BanditSettings, thompson_weights
from pitstop.serving.lease_loop import run_leased
from pitstop.serving.outcome_report import tally_over

log = logging.getLogger(__name__)

LEASE: Final = "bandit-controller"
BANDIT_ACTOR: Final = "bandit-controller"


class BanditController:
    def __init__(
        self,
        delivery: Delivery,
        outcomes: Outcomes,
        holder: str,
        *,
        actor: str = BANDIT_ACTOR,
        tick_s: float = 0.5,
        lease_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self._delivery = delivery
        self._outcomes = outcomes
        self._holder = holder
        self._actor = actor
        self._tick_s = tick_s
        self._lease_ttl_s = lease_ttl_s
        self._clock = clock
        self._rng = np.random.default_rng(seed)
        self._updated: dict[str, float] = {}
        """Model → when this controller last considered it (its clock)."""

    async def run(self) -> None:
        """Tick until cancelled; errors are logged and the next tick tries again."""
        await run_leased(
            "bandit controller", self._delivery, LEASE, self._holder, self.tick, self._tick_s
        )

    async def tick(self) -> dict[str, TrafficPolicy]:
        """One pass, if this replica holds the lease: the policies it wrote, by model."""
        held = await asyncio.to_thread(
            self._delivery.acquire_lease, LEASE, self._holder, self._lease_ttl_s
        )
        if not held:
            return {}
        policies = await asyncio.to_thread(self._delivery.policies)
        written: dict[str, TrafficPolicy] = {}
        now = self._clock()
        for model, policy in policies.items():
            bandit = policy.bandit
            if bandit is None or now - self._updated.get(model, -1e18) < bandit.interval_s:
                continue
            self._updated[model] = now
            try:
                moved = await self._update(model, policy)
            except PitstopError as exc:
                log.warning("bandit of %s not updated: %s", model, exc)
                continue
            if moved is not None:
                written[model] = moved
        return written

    async def _update(self, model: str, policy: TrafficPolicy) -> TrafficPolicy | None:
        bandit = policy.bandit
        assert bandit is not None
        if await asyncio.to_thread(self._delivery.active_rollout, model) is not None:
            return None
        since = datetime.now(UTC) - timedelta(seconds=bandit.window_s)
        rows = await asyncio.to_thread(self._outcomes.sums, model, since=since)
        metric = Metric.parse(bandit.metric)
        tallies = {
            arm.target: tally_over(metric, (r for r in rows if r.arm == arm.target))
            for arm in policy.arms
        }
        settings = BanditSettings(
            metric=metric, min_share=bandit.min_share, max_step=bandit.max_step,
            interval_s=bandit.interval_s,
        )  # fmt: skip
        current = {arm.target: arm.weight for arm in policy.arms}
        weights = thompson_weights(tallies, current, settings, self._rng)
        if all(abs(weights[t] - w) < 0.005 for t, w in current.items()):
            return None
        moved = replace(policy, arms=tuple(Arm(t, weights[t]) for t in current))
        described = ", ".join(
            f"{t} {current[t]:g}%→{weights[t]:g}% ({tallies[t].total:g}/{tallies[t].n})"
            for t in current
        )
        reason = f"bandit ({metric.value}, thompson sampling): {described}"
        changed = await asyncio.to_thread(
            self._delivery.set_policy, model, moved, actor=self._actor, reason=reason,
            expect=policy,
        )  # fmt: skip
        if changed:
            log.info("bandit of %s: %s", model, described)
        return moved if changed else None
