"""A/B verdicts: power against a real difference, false positives under repeated looks (and why a
fixed-horizon test would not do), the sample-size rules, and the non-inferiority guard."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pitstop.errors import InvalidInput
from pitstop.monitoring.outcome import Metric, Tally
from pitstop.serving.comparison import (
    Design,
    Standing,
    Verdict,
    compare,
    non_inferior,
    required_per_arm,
)

Z_975 = 1.959964


def binary(successes: float, n: int) -> Tally:
    return Tally(int(n), float(successes), float(successes))


def coin_flips(seed: int, p: float, n: int) -> Tally:
    return Tally.of((np.random.default_rng(seed).random(n) < p).astype(float))


# (a) power


def test_a_real_difference_is_found_in_the_right_direction() -> None:
    a, b = coin_flips(1, 0.50, 5000), coin_flips(2, 0.55, 5000)
    result = compare(Metric.ACCURACY, a, b, Design())
    assert result.verdict is Verdict.BETTER, result.reason
    assert result.p_value < 0.05
    assert 0.0 < result.low < result.difference < result.high
    assert result.difference == pytest.approx(b.mean - a.mean)
    assert result.needed == 0
    assert result.reason.startswith("b is better: accuracy +")

    reverse = compare(Metric.ACCURACY, b, a, Design())
    assert reverse.verdict is Verdict.WORSE, reverse.reason
    assert reverse.high < 0.0
    assert reverse.p_value == pytest.approx(result.p_value)


def test_a_lower_error_rate_is_better() -> None:
    a, b = coin_flips(1, 0.50, 5000), coin_flips(2, 0.55, 5000)  # x = correct
    result = compare(Metric.ERROR_RATE, a, b, Design())
    assert result.verdict is Verdict.BETTER, result.reason
    assert result.high < 0.0
    assert result.b.value < result.a.value


@pytest.mark.parametrize("metric", [Metric.MAE, Metric.RMSE])
def test_a_smaller_error_is_better(metric: Metric) -> None:
    rng = np.random.default_rng(3)
    errors_a, errors_b = rng.normal(0.0, 1.0, 3000), rng.normal(0.0, 0.85, 3000)
    x = np.abs if metric is Metric.MAE else np.square
    a, b = Tally.of(x(errors_a)), Tally.of(x(errors_b))
    result = compare(metric, a, b, Design(mde=0.05))
    assert result.verdict is Verdict.BETTER, result.reason
    assert result.low < result.difference < result.high < 0.0
    assert result.difference == pytest.approx(result.b.value - result.a.value)
    assert compare(metric, b, a, Design(mde=0.05)).verdict is Verdict.WORSE


# (b) false positives under repeated looks

EXPERIMENTS, PER_ARM, EVERY = 200, 5000, 250
LOOKS = np.arange(EVERY, PER_ARM + 1, EVERY)  # 20 looks


def null_experiments(seed: int, p: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Successes of two identical arms at each look: shape (experiments, looks)."""
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.random((EXPERIMENTS, PER_ARM)) < p, axis=1, dtype=np.int64)[:, LOOKS - 1]
    b = np.cumsum(rng.random((EXPERIMENTS, PER_ARM)) < p, axis=1, dtype=np.int64)[:, LOOKS - 1]
    return a, b


def test_identical_arms_are_rarely_called_different_however_often_we_look() -> None:
    design = Design(alpha=0.05)
    successes_a, successes_b = null_experiments(seed=20, p=0.3)
    better = worse = 0
    for row_a, row_b in zip(successes_a, successes_b, strict=True):
        verdicts = {
            compare(
                Metric.ACCURACY, binary(int(sa), int(n)), binary(int(sb), int(n)), design
            ).verdict
            for n, sa, sb in zip(LOOKS, row_a, row_b, strict=True)
        }
        better += Verdict.BETTER in verdicts
        worse += Verdict.WORSE in verdicts
    rate, either = better / EXPERIMENTS, (better + worse) / EXPERIMENTS
    message = f"mSPRT: false 'better' in {rate:.1%}, either way in {either:.1%} of experiments"
    assert rate <= design.alpha, message
    assert either <= design.alpha, message


def test_a_fixed_horizon_z_test_peeked_at_20_times_is_fooled_too_often() -> None:
    """The reason for the sequential test: the same data, a two-proportion z-test at 5% each
    look, and "better" somewhere along the way far more often than 5%."""
    successes_a, successes_b = null_experiments(seed=20, p=0.3)
    pooled = (successes_a + successes_b) / (2 * LOOKS)
    z = (successes_b - successes_a) / LOOKS / np.sqrt(pooled * (1 - pooled) * 2 / LOOKS)
    rate = float((z > Z_975).any(axis=1).mean())
    either = float((np.abs(z) > Z_975).any(axis=1).mean())
    message = f"z-test: false 'better' in {rate:.1%}, either way in {either:.1%} of experiments"
    assert rate > 0.05, message
    assert either > 2 * 0.05, message


# (c) sample sizes


def test_no_verdict_before_min_samples() -> None:
    result = compare(Metric.ACCURACY, binary(10, 40), binary(39, 40), Design(min_samples=100))
    assert result.verdict is Verdict.NO_VERDICT
    assert result.needed > 60
    assert "40 of 100" in result.reason


def test_no_verdict_while_more_data_is_needed() -> None:
    same = binary(600, 2000)
    result = compare(Metric.ACCURACY, same, same, Design())
    assert result.verdict is Verdict.NO_VERDICT, result.reason
    required = required_per_arm(Metric.ACCURACY, same, same, Design())
    assert result.needed == required - 2000 > 0
    assert f"{result.needed} more per arm" in result.reason


def test_no_difference_once_the_required_sample_is_in() -> None:
    same = binary(6000, 20000)
    required = required_per_arm(Metric.ACCURACY, same, same, Design())
    assert required <= 20000
    result = compare(Metric.ACCURACY, same, same, Design())
    assert result.verdict is Verdict.NO_DIFFERENCE, result.reason
    assert result.needed == 0
    assert result.low < 0.0 < result.high
    assert result.p_value == 1.0


@pytest.mark.parametrize("metric", [Metric.ACCURACY, Metric.MAE])
def test_required_per_arm_falls_as_the_effect_grows(metric: Metric) -> None:
    a = binary(300, 1000) if metric is Metric.ACCURACY else Tally.of(np.linspace(0, 2, 1000))
    sizes = [required_per_arm(metric, a, a, Design(mde=mde)) for mde in (0.01, 0.02, 0.05, 0.1)]
    assert sizes == sorted(sizes, reverse=True)
    assert len(set(sizes)) == len(sizes)


def test_required_per_arm_is_more_than_a_fixed_horizon_test_needs() -> None:
    """Always-valid costs samples: more than (z_a/2 + z_power)^2 (var_a + var_b) / mde^2."""
    a = binary(300, 1000)
    fixed = (Z_975 + 0.841621) ** 2 * 2 * 0.3 * 0.7 / 0.02**2
    required = required_per_arm(Metric.ACCURACY, a, a, Design())
    assert fixed < required < 3 * fixed


def test_the_design_reads_json_and_names_what_is_wrong() -> None:
    design = Design.from_json({"alpha": 0.1, "min_samples": 500.0, "mde": 1})
    assert design == Design(alpha=0.1, mde=1.0, min_samples=500)
    assert Design.from_json(design.to_json()) == design
    assert Design.from_json(None) == Design()


BAD_DESIGNS: list[tuple[dict[str, Any], str]] = [
    ({"alpah": 0.1}, "alpah"),
    ({"alpha": 1.5}, "alpha"),
    ({"power": 0}, "power"),
    ({"mde": -0.1}, "mde"),
    ({"min_samples": 1}, "min_samples"),
    ({"min_samples": 10.5}, "min_samples"),
    ({"mde": "big"}, "mde"),
    ({"alpha": True}, "alpha"),
]


@pytest.mark.parametrize(("body", "field"), BAD_DESIGNS)
def test_a_bad_design_names_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        Design.from_json(body)


def test_comparison_json_is_valid_even_without_data() -> None:
    body = compare(Metric.MAE, Tally(), Tally(), Design()).to_json()
    assert body["verdict"] == "no verdict yet"
    assert body["difference"] is None
    assert body["a"]["value"] is None
    json.dumps(body, allow_nan=False)


# (d) non-inferiority


NON_INFERIORITY = [
    # what, metric, baseline, canary, margin, standing
    ("worse by 10 points", Metric.ACCURACY, binary(2700, 3000), binary(2400, 3000), 0.05, "fail"),
    ("equal", Metric.ACCURACY, binary(1500, 3000), binary(1500, 3000), 0.05, "pass"),
    ("equal, tiny samples", Metric.ACCURACY, binary(5, 10), binary(5, 10), 0.05, "wait"),
    (
        "worse by 3 points of 5",
        Metric.ACCURACY,
        binary(1500, 3000),
        binary(1410, 3000),
        0.05,
        "wait",
    ),
    ("better", Metric.ACCURACY, binary(2400, 3000), binary(2700, 3000), 0.05, "pass"),
    ("error rate: equal", Metric.ERROR_RATE, binary(2700, 3000), binary(2700, 3000), 0.05, "pass"),
    ("error rate: worse", Metric.ERROR_RATE, binary(2700, 3000), binary(2400, 3000), 0.05, "fail"),
    ("zero margin, equal", Metric.ACCURACY, binary(1500, 3000), binary(1500, 3000), 0.0, "wait"),
]


@pytest.mark.parametrize(
    ("what", "metric", "baseline", "canary", "margin", "standing"),
    NON_INFERIORITY,
    ids=[case[0] for case in NON_INFERIORITY],
)
def test_non_inferior(
    what: str, metric: Metric, baseline: Tally, canary: Tally, margin: float, standing: str
) -> None:
    result = non_inferior(metric, baseline, canary, margin, alpha=0.05, min_samples=100)
    assert result.standing is Standing(standing), result.reason
    assert metric.value in result.reason or "observations" in result.reason
    if math.isfinite(result.difference):
        assert result.low <= result.difference <= result.high


@pytest.mark.parametrize(
    ("canary_sd", "standing"), [(1.0, Standing.PASS), (1.4, Standing.FAIL), (1.06, Standing.WAIT)]
)
def test_non_inferior_on_errors_flips_the_sign(canary_sd: float, standing: Standing) -> None:
    rng = np.random.default_rng(4)
    baseline = Tally.of(np.abs(rng.normal(0.0, 1.0, 4000)))
    canary = Tally.of(np.abs(rng.normal(0.0, canary_sd, 4000)))
    result = non_inferior(Metric.MAE, baseline, canary, 0.05, alpha=0.05, min_samples=100)
    assert result.standing is standing, result.reason
    assert result.difference == pytest.approx(baseline.mean - canary.mean)
    assert "margin allows 0.05 worse" in result.reason


def test_non_inferior_checks_its_arguments() -> None:
    same = binary(50, 100)
    with pytest.raises(InvalidInput, match="margin"):
        non_inferior(Metric.ACCURACY, same, same, -0.1, alpha=0.05, min_samples=10)
    with pytest.raises(InvalidInput, match="alpha"):
        non_inferior(Metric.ACCURACY, same, same, 0.1, alpha=0.0, min_samples=10)
