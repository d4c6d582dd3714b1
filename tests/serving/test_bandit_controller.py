"""The bandit controller over a real (SQLite) registry: it moves weights toward the arm that
earns more, audits each move, keeps every arm's minimum, yields to a rollout and never
overwrites a change a person made since it read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pitstop.errors import InvalidInput
from pitstop.registry import Arm, Bandit, FeedbackRecord, Guard, Registry, TrafficPolicy
from pitstop.serving.bandit_controller import BanditController
from tests.handler_models import SCORE, push

POLICY = TrafficPolicy(
    arms=(Arm("production", 50.0), Arm("2", 50.0)),
    bandit=Bandit(min_share=10, max_step=15, interval_s=0.1),
)


def _rewards(registry: Registry, arm: str, version: int, wins: int, n: int) -> None:
    now = datetime.now(UTC)
    registry.outcomes.record_feedback([
        FeedbackRecord("m", f"{arm}-{i}", version, arm, now, now, now, reward=float(i < wins))
        for i in range(n)
    ])  # fmt: skip


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    opened = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "a")
    push(opened, tmp_path / "v1", "m", SCORE, "production")
    push(opened, tmp_path / "v2", "m", SCORE + "  # 2")
    opened.delivery.set_policy("m", POLICY, actor="alice")
    return opened


def test_weights_move_toward_the_better_arm_at_a_bounded_rate(registry: Registry) -> None:
    _rewards(registry, "production", 1, 20, 200)
    _rewards(registry, "2", 2, 120, 200)
    clock = [0.0]
    controller = BanditController(
        registry.delivery, registry.outcomes, "me", clock=lambda: clock[0], seed=1
    )
    moved = asyncio.run(controller.tick())
    weights = {a.target: a.weight for a in moved["m"].arms}
    assert weights == {"production": 35.0, "2": 65.0}  # one step of max_step
    assert registry.delivery.policy("m") == moved["m"]
    assert asyncio.run(controller.tick()) == {}  # the interval has not passed
    for _ in range(10):
        clock[0] += 1
        asyncio.run(controller.tick())
    final = {a.target: a.weight for a in registry.delivery.policy("m").arms}
    assert final == {"production": 10.0, "2": 90.0}  # the floor holds
    events = [e for e in registry.history("m") if e.actor == "bandit-controller"]
    assert events
    assert all(e.action == "policy.set" for e in events)
    assert "thompson sampling" in (events[0].reason or "")


def test_it_yields_to_a_rollout_and_to_a_person(registry: Registry) -> None:
    _rewards(registry, "2", 2, 150, 200)
    controller = BanditController(registry.delivery, registry.outcomes, "me", seed=2)
    registry.delivery.start_rollout(
        "m", 2, steps=[10, 100], interval_s=60, guard=Guard(), actor="alice"
    )
    assert asyncio.run(controller.tick()) == {}
    registry.delivery.advance(
        registry.delivery.active_rollout("m").id,
        "abort",
        actor="alice",  # type: ignore[union-attr, arg-type]
    )
    registry.delivery.set_policy("m", POLICY, actor="alice")
    # A person's change lands between the controller's read and its write: theirs stays.
    changed = TrafficPolicy(arms=(Arm("production", 70.0), Arm("2", 30.0)), bandit=POLICY.bandit)
    assert not registry.delivery.set_policy(
        "m", changed, actor="bandit-controller", expect=TrafficPolicy()
    )
    assert registry.delivery.policy("m") == POLICY


@pytest.mark.parametrize(
    ("bandit", "message"),
    [
        ({"metric": "accuracy"}, "bandit.metric"),
        ({"min_share": 60}, "bandit.min_share"),
        ({"max_step": 0}, "bandit.max_step"),
        ({"speed": 1}, "bandit.speed"),
        ({"min_share": 40}, "cannot each keep 40%"),
    ],
)
def test_bandit_settings_are_checked(bandit: dict[str, object], message: str) -> None:
    body = {"arms": [{"target": "production", "weight": 40}, {"target": "2", "weight": 30},
                     {"target": "3", "weight": 30}], "bandit": bandit}  # fmt: skip
    with pytest.raises(InvalidInput, match=message):
        TrafficPolicy.from_json(body)
