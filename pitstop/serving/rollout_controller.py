"""The rollout controller: a thin loop that applies :func:`~pitstop.serving.rollout.judge`.

Every tick, the replica holding the registry lease ``rollout-controller`` (so several replicas
never fight) judges each RUNNING rollout on its :class:`~pitstop.serving.evidence.Evidence`: the
canary since its step began, the baseline since the rollout began (late steps leave the baseline
little traffic), merged over every live replica (``SharedEvidence``). A ROLL_BACK verdict acts at
once; STEP_UP and PROMOTE wait until the step's interval has passed; HOLD waits for more
requests, and so does incomplete evidence (a live replica's windows missing or stale).
Decisions and reasons land in the registry's audit history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pitstop.registry import Delivery, Rollout, RolloutState, RolloutVerb
from pitstop.serving.evidence import Evidence
from pitstop.serving.lease_loop import run_leased
from pitstop.serving.rollout import ArmWindow, Judgement, Verdict, judge

log = logging.getLogger(__name__)

LEASE = "rollout-controller"
ACTOR = "rollout-controller"
VERBS = {
    Verdict.STEP_UP: RolloutVerb.STEP,
    Verdict.PROMOTE: RolloutVerb.PROMOTE,
    Verdict.ROLL_BACK: RolloutVerb.ROLLBACK,
}


@dataclass(frozen=True)
class Decision:
    rollout: Rollout
    judgement: Judgement
    acted: bool


class RolloutController:
    def __init__(
        self,
        delivery: Delivery,
        evidence: Evidence,
        holder: str,
        *,
        tick_s: float = 0.5,
        lease_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._delivery = delivery
        self._evidence = evidence
        self._holder = holder
        self._tick_s = tick_s
        self._lease_ttl_s = lease_ttl_s
        self._clock = clock

    async def run(self) -> None:
        """Tick until cancelled; errors are logged and the next tick tries again."""
        await run_leased(
            "rollout controller", self._delivery, LEASE, self._holder, self.tick, self._tick_s
        )

    async def tick(self) -> list[Decision]:
        """One pass over the active rollouts, if this replica holds the lease."""
        held = await asyncio.to_thread(
            self._delivery.acquire_lease, LEASE, self._holder, self._lease_ttl_s
        )
        if not held:
            return []
        rollouts = await asyncio.to_thread(self._delivery.rollouts, None, active_only=True)
        return [await self._evaluate(r) for r in rollouts if r.state is RolloutState.RUNNING]

    async def _evaluate(self, rollout: Rollout) -> Decision:
        since = rollout.step_started_at.timestamp()
        gathered = await asyncio.to_thread(self._evidence.gather, rollout)
        if isinstance(gathered, str):  # incomplete: inconclusive, never a pass
            return Decision(rollout, Judgement(Verdict.HOLD, gathered), False)
        canary, baseline = gathered
        waited = self._clock() - since
        judgement = judge_step(rollout, canary, baseline, waited)
        due = waited >= rollout.interval_s
        act = judgement.verdict is Verdict.ROLL_BACK or (
            due and judgement.verdict is not Verdict.HOLD
        )
        if act:
            verb = VERBS[judgement.verdict]
            log.info(
                "rollout %d of %s v%d at %g%%: %s (%s)",
                rollout.id, rollout.model, rollout.version, rollout.weight, verb, judgement.reason,
            )  # fmt: skip
            await asyncio.to_thread(
                self._delivery.advance, rollout.id, verb, actor=ACTOR, reason=judgement.reason
            )
        return Decision(rollout, judgement, act)


def judge_step(
    rollout: Rollout, canary: ArmWindow, baseline: ArmWindow, waited_s: float
) -> Judgement:
    """The verdict on the rollout's current step, ``waited_s`` after it began (what the
    controller acts on, and what ``GET …/traffic`` shows)."""
    last = rollout.step == len(rollout.steps) - 1
    decisive = last or rollout.steps[rollout.step + 1] >= 100
    return judge(canary, baseline, rollout.guard, last, waited_s, decisive)
