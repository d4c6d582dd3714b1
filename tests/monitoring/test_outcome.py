"""Outcome metrics and one arm's estimate: Wilson intervals, mirrored error rates, MAE and RMSE."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pitstop.errors import InvalidInput
from pitstop.monitoring.outcome import Estimate, Metric, Tally, estimate


def binary(successes: int, n: int) -> Tally:
    return Tally(n, float(successes), float(successes))


WILSON = [
    # successes, n, value, low, high (95%)
    (50, 100, 0.5, 0.4038, 0.5962),
    (0, 10, 0.0, 0.0, 0.2775),
    (10, 10, 1.0, 0.7225, 1.0),
    (1, 10, 0.1, 0.0179, 0.4042),
    (81, 263, 0.3080, 0.2553, 0.3662),
]


@pytest.mark.parametrize(("successes", "n", "value", "low", "high"), WILSON)
def test_wilson_interval(successes: int, n: int, value: float, low: float, high: float) -> None:
    got = estimate(Metric.ACCURACY, binary(successes, n))
    assert got.n == n
    assert got.value == pytest.approx(value, abs=1e-4)
    assert got.low == pytest.approx(low, abs=1e-4)
    assert got.high == pytest.approx(high, abs=1e-4)
    assert 0.0 <= got.low <= got.value <= got.high <= 1.0


@pytest.mark.parametrize(("successes", "n", "value", "low", "high"), WILSON)
def test_error_rate_mirrors_accuracy(
    successes: int, n: int, value: float, low: float, high: float
) -> None:
    got = estimate(Metric.ERROR_RATE, binary(successes, n))
    assert got.value == pytest.approx(1 - value, abs=1e-4)
    assert got.low == pytest.approx(1 - high, abs=1e-4)
    assert got.high == pytest.approx(1 - low, abs=1e-4)


def test_conversion_is_a_proportion_too() -> None:
    got = estimate(Metric.CONVERSION, binary(50, 100))
    accuracy = estimate(Metric.ACCURACY, binary(50, 100))
    assert got == Estimate(Metric.CONVERSION, 100, 0.5, accuracy.low, accuracy.high)


def test_confidence_widens_the_interval() -> None:
    narrow = estimate(Metric.ACCURACY, binary(50, 100), confidence=0.8)
    wide = estimate(Metric.ACCURACY, binary(50, 100), confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_mae_is_the_mean_with_a_normal_interval() -> None:
    errors = [0.5, 1.5, 1.0, 2.0, 0.0] * 20  # mean 1.0, sample sd 0.7107
    got = estimate(Metric.MAE, Tally.of(errors))
    half = 1.959964 * float(np.std(errors, ddof=1)) / math.sqrt(100)
    assert got.value == pytest.approx(1.0)
    assert (got.low, got.high) == pytest.approx((1.0 - half, 1.0 + half))


def test_rmse_is_the_root_of_the_mean_squared_error_interval() -> None:
    errors = np.random.default_rng(7).normal(0.0, 2.0, 4000)
    squared = errors**2
    got = estimate(Metric.RMSE, Tally.of(squared))
    half = 1.959964 * float(np.std(squared, ddof=1)) / math.sqrt(len(squared))
    mse = float(squared.mean())
    assert got.value == pytest.approx(math.sqrt(mse))
    assert got.low == pytest.approx(math.sqrt(mse - half))
    assert got.high == pytest.approx(math.sqrt(mse + half))
    assert got.low < 2.0 < got.high


def test_rmse_lower_bound_is_clamped_at_zero() -> None:
    got = estimate(Metric.RMSE, Tally.of([0.0, 0.0, 0.0, 9.0]))
    assert got.low == 0.0
    assert got.value == pytest.approx(1.5)


@pytest.mark.parametrize("metric", list(Metric))
def test_no_data_is_nan_and_null_in_json(metric: Metric) -> None:
    got = estimate(metric, Tally())
    assert got.n == 0
    assert all(math.isnan(x) for x in (got.value, got.low, got.high))
    body = got.to_json()
    assert body == {"metric": metric.value, "n": 0, "value": None, "low": None, "high": None}
    json.dumps(body, allow_nan=False)


def test_one_observation_has_a_value_but_no_interval() -> None:
    got = estimate(Metric.MAE, Tally.of([0.3]))
    assert got.value == pytest.approx(0.3)
    assert math.isnan(got.low)
    assert got.to_json()["low"] is None


def test_tally_adds_and_knows_its_spread() -> None:
    both = Tally.of([1.0, 2.0]) + Tally.of([3.0, 4.0])
    assert both == Tally(4, 10.0, 30.0)
    assert both.mean == 2.5
    assert both.variance() == pytest.approx(np.var([1, 2, 3, 4], ddof=1))
    assert Tally.of([2.0, 2.0, 2.0]).variance() > 0.0
    assert math.isnan(Tally().mean)


@pytest.mark.parametrize(
    ("successes", "n", "variance"),
    [(0, 10, (0.5 / 11) * (1 - 0.5 / 11)), (10, 10, (0.5 / 11) * (1 - 0.5 / 11)), (0, 0, 0.25)],
)
def test_binary_variance_is_smoothed(successes: int, n: int, variance: float) -> None:
    assert binary(successes, n).variance(binary=True) == pytest.approx(variance)


METRICS = [
    # metric, higher is better, proportion, kind
    (Metric.ACCURACY, True, True, "label"),
    (Metric.ERROR_RATE, False, True, "label"),
    (Metric.MAE, False, False, "value"),
    (Metric.RMSE, False, False, "value"),
    (Metric.MEAN_REWARD, True, False, "reward"),
    (Metric.CONVERSION, True, True, "reward"),
]


@pytest.mark.parametrize(("metric", "higher", "proportion", "kind"), METRICS)
def test_metric_properties(metric: Metric, higher: bool, proportion: bool, kind: str) -> None:
    assert (metric.higher_is_better, metric.proportion, metric.kind) == (higher, proportion, kind)
    assert Metric.parse(metric.value) is metric


def test_parse_forgives_case_and_hyphens() -> None:
    assert Metric.parse(" Error-Rate ") is Metric.ERROR_RATE


def test_parse_names_the_known_metrics() -> None:
    with pytest.raises(InvalidInput, match="unknown metric 'f1'") as caught:
        Metric.parse("f1")
    for metric in Metric:
        assert metric.value in str(caught.value)


def test_confidence_must_be_a_probability() -> None:
    with pytest.raises(InvalidInput, match="confidence"):
        estimate(Metric.MAE, Tally.of([1.0, 2.0]), confidence=1.0)
