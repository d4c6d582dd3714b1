"""The console's last hour: quantiles from bucket counts and points between samples (tables)."""

from __future__ import annotations

import pytest

from pitstop.monitoring.histogram import LATENCY_BUCKETS
from pitstop.monitoring.live import Counts, LiveSeries, Sample, between, quantile, series
from pitstop.monitoring.requests import RequestRecorder

BOUNDS = (0.001, 0.01, 0.1)


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, (0, 0, 0, 0), None),  # nothing observed
        (0.5, (10, 0, 0, 0), 0.0005),  # halfway into the first bucket, from 0
        (0.5, (0, 10, 0, 0), 0.0055),  # halfway between 1 ms and 10 ms
        (0.99, (50, 50, 0, 0), 0.001 + 0.009 * 0.98),
        (0.5, (1, 0, 0, 1), 0.001),  # exactly at the first bucket's end
        (0.99, (0, 0, 0, 5), 0.1),  # in +Inf: the highest finite bound
        (1.0, (3, 0, 2, 0), 0.1),
    ],
)
def test_quantile(q: float, counts: tuple[int, ...], expected: float | None) -> None:
    found = quantile(q, BOUNDS, counts)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


def counts(ok: int, errors: int, fast: int) -> Counts:
    """``fast`` requests in the 1 ms bucket, the rest in the 10 ms one."""
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[1] = fast
    buckets[5] = ok + errors - fast
    return Counts(ok, errors, tuple(buckets))


@pytest.mark.parametrize(
    ("before", "after", "requests", "errors"),
    [
        (None, counts(10, 0, 10), 10, 0),  # first seen: everything since start
        (counts(10, 0, 10), counts(30, 5, 10), 25, 5),
        (counts(30, 5, 10), counts(30, 5, 10), 0, 0),  # idle
        (counts(30, 5, 10), counts(4, 1, 5), 5, 1),  # a worker restarted: from zero again
    ],
)
def test_between(before: Counts | None, after: Counts, requests: int, errors: int) -> None:
    point = between(before, after, 10.0, 100.0)
    assert (point.requests, point.errors) == (requests, errors)
    assert point.rate == pytest.approx(requests / 10)
    if requests:
        assert point.error_rate == pytest.approx(errors / requests)
        assert point.quantiles[0] is not None
    else:
        assert point.quantiles == (None, None, None)


def test_between_interpolates_latency_in_the_window_only() -> None:
    before = counts(100, 0, 100)  # 100 fast requests before the window
    after = counts(110, 0, 100)  # then 10 slower ones (7.5-10 ms bucket)
    point = between(before, after, 10.0, 100.0)
    assert 0.0075 <= (point.quantiles[0] or 0) <= 0.01


def test_series_skips_models_absent_from_a_sample() -> None:
    samples = [
        Sample(0.0, {}),
        Sample(10.0, {"a": counts(5, 0, 5)}),
        Sample(20.0, {"a": counts(15, 1, 5), "b": counts(2, 0, 2)}),
    ]
    assert [(p.at, p.requests) for p in series(samples, "a")] == [(10.0, 5), (20.0, 11)]
    assert [(p.at, p.requests) for p in series(samples, "b")] == [(20.0, 2)]


def test_live_series_over_a_recorder() -> None:
    now = [1000.0]
    recorder = RequestRecorder()
    live = LiveSeries(lambda: recorder, clock=lambda: now[0])
    live.tick()
    recorder.series("fraud", 1).served("rest", 0.002, 1)
    recorder.series("fraud", 2).served("grpc", 0.004, 1)
    recorder.series("fraud", 2).failed("rest", RuntimeError("x"), 0.5)
    now[0] += 10
    live.tick()
    now[0] += 5
    assert live.models() == {"fraud"}
    points = live.points(["fraud"])["fraud"]
    assert [(p.requests, p.errors) for p in points] == [(3, 1), (0, 0)]
    latest = live.latest(60)["fraud"]
    assert (latest.requests, latest.errors, latest.seconds) == (3, 1, 15.0)
    assert live.points(["fraud"], since=1012.0)["fraud"][0].at == 1015.0
