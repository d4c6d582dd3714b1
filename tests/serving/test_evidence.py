"""The rollout judge's evidence: summaries merged exactly where they can be (counts) and within
a bucket where they cannot (p99), and a step judged only once every live replica has reported."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pitstop.serving.evidence import merge
from pitstop.serving.window import EDGES_MS, Summary, Windows

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def summary(requests: int, errors: int, latencies_ms: list[float], values: list[float]) -> Summary:
    windows = Windows(clock=lambda: START.timestamp())
    arm = windows.arm("m", 1)
    for latency in latencies_ms:
        arm.record(latency, True, [])
    for _ in range(errors):
        arm.record(1.0, False, [])
    if values:
        arm.record(1.0, True, values)
    got = windows.summary("m", 1, START)
    assert got.requests == len(latencies_ms) + errors + (1 if values else 0)
    return got


def test_merged_counts_are_exact_and_p99_within_a_bucket() -> None:
    a = summary(0, 2, [1.0] * 99, [])
    b = summary(0, 3, [1.0] * 98 + [40.0, 45.0], [0.0, 1.0])
    window = merge([a, b])
    assert (window.requests, window.errors) == (a.requests + b.requests, 5)
    assert sorted(window.predictions) == [0.0, 1.0]
    exact = sorted([1.0] * 198 + [40.0, 45.0, 1.0])[int(0.99 * 201)]
    assert exact <= window.p99_ms <= exact * 1.25 + EDGES_MS[0]
    assert merge([]).requests == 0
    assert Summary.from_json(b.to_json()) == b


@pytest.mark.parametrize("latency_ms", [0.01, 3.0, 1e9])
def test_every_latency_lands_in_a_bucket(latency_ms: float) -> None:
    windows = Windows(clock=lambda: START.timestamp())
    windows.arm("m", 1).record(latency_ms, True, [])
    assert sum(windows.summary("m", 1, START).latency_counts) == 1
