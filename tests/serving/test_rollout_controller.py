"""The rollout controller on a fake clock and a fake delivery store: when it steps up, promotes,
rolls back or holds, with no wall-clock waits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from pitstop.registry import Guard, Rollout, RolloutState
from pitstop.serving.evidence import merge
from pitstop.serving.rollout import ArmWindow
from pitstop.serving.rollout_controller import RolloutController
from pitstop.serving.window import Windows

pytestmark = pytest.mark.timeout(10)

START = 1_800_000_000.0
GUARD = {"min_requests": 20, "min_predictions": 10_000, "min_errors": 3}


@dataclass
class FakeClock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeDelivery:
    """The registry's Delivery as the controller uses it: a lease and the rollouts."""

    rollouts_: list[Rollout]
    lease_holder: str | None = None
    actions: list[tuple[int, str, str | None]] = field(default_factory=list)

    def acquire_lease(self, _name: str, holder: str, _ttl_s: float) -> bool:
        if self.lease_holder in (None, holder):
            self.lease_holder = holder
            return True
        return False

    def release_lease(self, _name: str, holder: str) -> None:
        if self.lease_holder == holder:
            self.lease_holder = None

    def rollouts(self, _model: str | None, active_only: bool = False) -> list[Rollout]:
        return [r for r in self.rollouts_ if r.active or not active_only]

    def advance(self, rollout_id: int, verb: str, *, actor: str, reason: str | None) -> Rollout:
        self.actions.append((rollout_id, verb, reason))
        return self.rollouts_[0]


@dataclass
class Observed:
    """Evidence from this process's windows alone (the fake of the registry-wide one)."""

    windows: Windows

    def gather(self, rollout: Rollout) -> tuple[ArmWindow, ArmWindow]:
        canary = self.windows.summary(rollout.model, rollout.version, rollout.step_started_at)
        baseline = self.windows.summary(rollout.model, rollout.baseline, rollout.started_at)
        return merge([canary]), merge([baseline])


def rollout(step: int = 0, steps: tuple[float, ...] = (10, 50, 100)) -> Rollout:
    at = datetime.fromtimestamp(START, UTC)
    return Rollout(
        id=1, model="m", version=2, baseline=1, steps=steps, interval_s=60.0, guard=Guard(**GUARD),
        step=step, state=RolloutState.RUNNING, reason=None, started_at=at, step_started_at=at,
        updated_at=at, created_by="test",
    )  # fmt: skip


def traffic(windows: Windows, clock: FakeClock, version: int, requests: int, errors: int) -> None:
    for index in range(requests):
        windows.arm("m", version).record(5.0, index >= errors, [])
    clock.now += 1


def controller(delivery: FakeDelivery, windows: Windows, clock: FakeClock) -> RolloutController:
    evidence = Observed(windows)
    return RolloutController(delivery, evidence, "replica-a", clock=clock)  # type: ignore[arg-type]


async def test_a_healthy_canary_is_held_until_its_interval_then_stepped_up() -> None:
    clock = FakeClock()
    windows, delivery = Windows(clock), FakeDelivery([rollout()])
    traffic(windows, clock, 1, 100, 0)
    traffic(windows, clock, 2, 50, 0)
    decisions = await controller(delivery, windows, clock).tick()
    assert [d.acted for d in decisions] == [False]  # healthy, but the step is 2 s old
    clock.now = START + 61
    decisions = await controller(delivery, windows, clock).tick()
    assert decisions[0].acted
    assert [verb for _, verb, _ in delivery.actions] == ["step"]


async def test_the_last_step_is_promoted_once_its_interval_passed() -> None:
    clock = FakeClock()
    windows, delivery = Windows(clock), FakeDelivery([rollout(step=2)])
    traffic(windows, clock, 1, 100, 0)
    traffic(windows, clock, 2, 100, 0)
    clock.now = START + 61
    await controller(delivery, windows, clock).tick()
    assert [verb for _, verb, _ in delivery.actions] == ["promote"]


async def test_a_failing_canary_is_rolled_back_at_once_with_the_reason() -> None:
    clock = FakeClock()
    windows, delivery = Windows(clock), FakeDelivery([rollout()])
    traffic(windows, clock, 1, 100, 0)
    traffic(windows, clock, 2, 50, 10)  # 20% errors
    decisions = await controller(delivery, windows, clock).tick()
    assert decisions[0].acted  # within its interval: a rollback does not wait
    [(_, verb, reason)] = delivery.actions
    assert verb == "rollback"
    assert reason is not None
    assert "error" in reason


async def test_too_few_requests_hold_even_after_the_interval() -> None:
    clock = FakeClock()
    windows, delivery = Windows(clock), FakeDelivery([rollout()])
    traffic(windows, clock, 1, 100, 0)
    traffic(windows, clock, 2, 5, 0)
    clock.now = START + 600
    decisions = await controller(delivery, windows, clock).tick()
    assert [d.acted for d in decisions] == [False]
    assert delivery.actions == []


async def test_only_the_lease_holder_judges_and_paused_rollouts_are_left_alone() -> None:
    clock = FakeClock()
    windows = Windows(clock)
    traffic(windows, clock, 1, 100, 0)
    traffic(windows, clock, 2, 50, 10)
    delivery = FakeDelivery([rollout()], lease_holder="replica-b")
    assert await controller(delivery, windows, clock).tick() == []
    paused = FakeDelivery([replace(rollout(), state=RolloutState.PAUSED)])
    assert await controller(paused, windows, clock).tick() == []
    assert paused.actions == []
