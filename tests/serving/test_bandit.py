"""Thompson-sampling weights: the floor, the sum and the step bound over a table of inputs, and
simulated bandits that find the best arm (conversions and continuous rewards)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pitstop.errors import InvalidInput
from pitstop.monitoring.outcome import Metric, Tally
from pitstop.serving.bandit import BanditSettings, check, thompson_weights, water_fill


def conversions(successes: int, n: int) -> Tally:
    return Tally(n, float(successes), float(successes))


EQUAL3 = {"a": 33.33, "b": 33.33, "c": 33.34}
DEFAULT = BanditSettings()
REWARDS = BanditSettings(metric=Metric.MEAN_REWARD)
rewards_rng = np.random.default_rng(9)

CASES: list[tuple[str, Mapping[str, Tally], Mapping[str, float], BanditSettings]] = [
    ("no data anywhere", {}, EQUAL3, DEFAULT),
    (
        "one arm clearly best",
        {"a": conversions(10, 500), "c": conversions(400, 500)},
        EQUAL3,
        DEFAULT,
    ),
    (
        "best arm already near the cap",
        {"a": conversions(10, 500), "b": conversions(12, 500), "c": conversions(400, 500)},
        {"a": 5.0, "b": 5.0, "c": 90.0},
        DEFAULT,
    ),
    (
        "a new arm under the floor",
        {"a": conversions(50, 100), "b": conversions(60, 100)},
        {"a": 50.0, "b": 50.0, "new": 0.0},
        DEFAULT,
    ),
    ("current does not add up to 100", {}, {"a": 10.0, "b": 10.0}, DEFAULT),
    ("one arm", {"a": conversions(3, 10)}, {"a": 100.0}, DEFAULT),
    (
        "floor takes everything",
        {"a": conversions(1, 100), "b": conversions(90, 100)},
        {"a": 50.0, "b": 50.0},
        BanditSettings(min_share=50.0),
    ),
    (
        "no floor, small steps",
        {"x": conversions(1, 100), "y": conversions(90, 100)},
        {"y": 20.0, "x": 80.0},
        BanditSettings(min_share=0.0, max_step=2.5),
    ),
    (
        "twenty arms at the floor",
        {f"arm{i}": conversions(i, 40) for i in range(20)},
        {f"arm{i}": 5.0 for i in range(20)},
        DEFAULT,
    ),
    (
        "continuous rewards",
        {
            "a": Tally.of(rewards_rng.normal(1.0, 2.0, 300)),
            "b": Tally.of(rewards_rng.normal(1.5, 2.0, 300)),
        },
        {"a": 60.0, "b": 40.0},
        REWARDS,
    ),
    ("continuous rewards, no data", {}, {"a": 50.0, "b": 50.0}, REWARDS),
]


@pytest.mark.parametrize(
    ("what", "tallies", "current", "settings"), CASES, ids=[case[0] for case in CASES]
)
def test_invariants(
    what: str,
    tallies: Mapping[str, Tally],
    current: Mapping[str, float],
    settings: BanditSettings,
) -> None:
    weights = thompson_weights(tallies, current, settings, np.random.default_rng(1))
    assert list(weights) == list(current)
    assert sum(round(w * 100) for w in weights.values()) == 10_000
    assert sum(weights.values()) == pytest.approx(100.0, abs=1e-9)
    assert all(round(w, 2) == w for w in weights.values())
    assert min(weights.values()) >= settings.min_share
    valid = min(current.values()) >= settings.min_share and sum(current.values()) == 100.0
    if valid:
        rounding = 0.005 * (len(current) + 1)
        moved = max(abs(weights[arm] - current[arm]) for arm in current)
        assert moved <= settings.max_step + rounding


def test_one_update_moves_the_best_arm_by_max_step() -> None:
    tallies = {"a": conversions(10, 500), "b": conversions(100, 500), "c": conversions(400, 500)}
    weights = thompson_weights(tallies, EQUAL3, DEFAULT, np.random.default_rng(2))
    assert weights["c"] == pytest.approx(43.34, abs=0.01)
    assert weights["a"] < 33.33
    assert weights["b"] < 33.33


def test_no_data_keeps_equal_weights() -> None:
    weights = thompson_weights({}, EQUAL3, DEFAULT, np.random.default_rng(3))
    assert all(abs(w - 33.33) < 2.0 for w in weights.values())


def test_a_current_under_the_floor_goes_straight_to_the_target() -> None:
    tallies = {"a": conversions(400, 500), "b": conversions(10, 500)}
    weights = thompson_weights(tallies, {"a": 0.0, "b": 100.0}, DEFAULT, np.random.default_rng(4))
    assert weights == {"a": 95.0, "b": 5.0}


WATER = [
    ([100.0, 0.0, 0.0], 5.0, [90.0, 5.0, 5.0]),
    ([97.0, 2.0, 1.0], 5.0, [90.0, 5.0, 5.0]),
    ([60.0, 38.0, 2.0], 5.0, [60 * 95 / 98, 38 * 95 / 98, 5.0]),
    ([50.0, 50.0], 5.0, [50.0, 50.0]),
    ([100.0, 0.0, 0.0, 0.0], 25.0, [25.0, 25.0, 25.0, 25.0]),
    ([0.0, 0.0], 0.0, [50.0, 50.0]),
]


@pytest.mark.parametrize(("shares", "floor", "filled"), WATER)
def test_water_fill(shares: list[float], floor: float, filled: list[float]) -> None:
    got = water_fill(np.array(shares), floor)
    assert got.tolist() == pytest.approx(filled)
    assert got.sum() == pytest.approx(100.0)


def test_the_floor_must_fit_the_arms() -> None:
    check(DEFAULT, 20)
    with pytest.raises(InvalidInput, match="min_share"):
        check(DEFAULT, 21)
    with pytest.raises(InvalidInput, match="min_share"):
        thompson_weights(
            {}, {f"arm{i}": 100 / 21 for i in range(21)}, DEFAULT, np.random.default_rng()
        )


def test_settings_read_json_and_name_what_is_wrong() -> None:
    settings = BanditSettings.from_json({"metric": "mean_reward", "draws": 1000.0, "max_step": 5})
    assert settings == BanditSettings(metric=Metric.MEAN_REWARD, draws=1000, max_step=5.0)
    assert BanditSettings.from_json(settings.to_json()) == settings
    assert settings.to_json()["metric"] == "mean_reward"
    assert BanditSettings.from_json(None) == DEFAULT


BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"min_shares": 1}, "min_shares"),
    ({"metric": "accuracy"}, "metric"),
    ({"metric": "f1"}, "metric"),
    ({"min_share": 100}, "min_share"),
    ({"max_step": 0}, "max_step"),
    ({"interval_s": -1}, "interval_s"),
    ({"draws": 0}, "draws"),
    ({"draws": 10.5}, "draws"),
    ({"draws": "many"}, "draws"),
]


@pytest.mark.parametrize(("body", "field"), BAD_SETTINGS)
def test_bad_settings_name_their_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        BanditSettings.from_json(body)


Reward = Callable[[np.random.Generator, npt.NDArray[np.int64]], npt.NDArray[np.float64]]


def simulate(
    reward: Reward, arms: int, settings: BanditSettings, updates: int, seed: int
) -> list[dict[str, float]]:
    """Weights after each update of a bandit routing 100 requests between updates."""
    rng = np.random.default_rng(seed)
    names = [f"arm{i}" for i in range(arms)]
    weights = dict(zip(names, water_fill(np.zeros(arms), 0.0).tolist(), strict=True))
    n, total, squares = np.zeros(arms), np.zeros(arms), np.zeros(arms)
    history = []
    for _ in range(updates):
        shares = np.array([weights[name] for name in names]) / 100.0
        routed = rng.choice(arms, size=100, p=shares / shares.sum())
        x = reward(rng, routed)
        n += np.bincount(routed, minlength=arms)
        total += np.bincount(routed, weights=x, minlength=arms)
        squares += np.bincount(routed, weights=x * x, minlength=arms)
        tallies = {
            name: Tally(int(n[i]), float(total[i]), float(squares[i]))
            for i, name in enumerate(names)
        }
        weights = thompson_weights(tallies, weights, settings, rng)
        history.append(weights)
    return history


CONVERSION_RATES = np.array([0.2, 0.5, 0.8])
FOUND_AFTER = 400
"""Requests until the best arm has 70%: four updates of at most 10 points from 33.3% (the
bound is max_step, not evidence: every seed of 0..29 tried got there at 400)."""


def test_conversions_find_the_best_arm() -> None:
    def converted(
        rng: np.random.Generator, routed: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        return (rng.random(len(routed)) < CONVERSION_RATES[routed]).astype(np.float64)

    history = simulate(converted, 3, DEFAULT, updates=30, seed=11)
    best = [weights["arm2"] for weights in history]
    found = next(100 * (i + 1) for i, share in enumerate(best) if share >= 70.0)
    assert found <= FOUND_AFTER, f"best arm reached 70% after {found} requests"
    assert min(best[found // 100 - 1 :]) >= 70.0
    assert best[-1] == pytest.approx(90.0)
    assert min(min(weights.values()) for weights in history) >= DEFAULT.min_share


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_continuous_rewards_find_the_best_arm(scale: float) -> None:
    means = np.array([1.0, 1.3, 0.7]) * scale

    def reward(rng: np.random.Generator, routed: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return rng.normal(means[routed], scale)

    history = simulate(reward, 3, REWARDS, updates=30, seed=12)
    assert history[-1]["arm1"] >= 70.0, history[-1]
    assert min(min(weights.values()) for weights in history) >= REWARDS.min_share
