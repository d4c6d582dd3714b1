"""Overhead of metrics + drift recording on the tiny-model REST throughput.

    .venv/bin/python bench/observability.py [--duration 5] [--rounds 3] [--concurrency 8]

Serves the 20-feature ONNX classifier (bench/models.py) from two servers, one with
``PITSTOP_METRICS_ENABLED`` and ``PITSTOP_DRIFT_ENABLED`` on (the defaults) and one with both off,
and loads them alternately with wrk (Debian package ``wrk``) over HTTP JSON, one row per request,
so drifting machine load hits both alike. Prints each round, the median throughput of each, and
the overhead ratio (target: under 5%). A final scrape checks that the "on" server did record.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from bench.throughput import json_body, pitstop_server, wrk  # noqa: E402
from pitstop.monitoring.drift_monitor import DriftMonitor  # noqa: E402
from pitstop.monitoring.requests import RequestRecorder  # noqa: E402
from tests.server import open_registry  # noqa: E402

OFF = {"PITSTOP_METRICS_ENABLED": "false", "PITSTOP_DRIFT_ENABLED": "false"}
ON = {"PITSTOP_METRICS_ENABLED": "true", "PITSTOP_DRIFT_ENABLED": "true"}


class _NoStore:
    def get(self, model: str, version: int) -> None:
        return None

    def put_if_absent(self, model: str, version: int, profile: object) -> bool:
        return False


def recording_cost_us(n: int = 200_000) -> float:
    """Microseconds the DataPlane spends recording one request with metrics and drift on:
    the same calls it makes per request, timed in a loop (no network noise)."""
    recorder, drift = RequestRecorder(), DriftMonitor(_NoStore())
    inputs = {"x": np.zeros((1, models.FEATURES), dtype=np.float32)}
    outputs = {"label": np.zeros(1, dtype=np.int64)}
    start = time.perf_counter()
    for _ in range(n):
        drift.record("tiny", 1, inputs)
        series = recorder.series("tiny", 1)
        series.executed(20_000, 80_000, 1, True)
        series.served("rest", 0.0002, 1)
        series.outputs.observe(outputs)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitstop-bench-obs-"))
    model = models.tiny_classifier()
    homes = {"off": work / "off", "on": work / "on"}
    for home in homes.values():
        with open_registry(home) as registry:
            package = models.tiny_onnx_package(home.parent / f"pkg-{home.name}", model)
            registry.push(package, name="tiny", aliases=["production"], actor="bench")
    body = json_body(work)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    with (
        pitstop_server(homes["off"], OFF) as off_server,
        pitstop_server(homes["on"], ON) as on_server,
    ):
        servers = {"off": off_server, "on": on_server}
        for server in servers.values():  # warm both up
            wrk(f"{server.url}/v2/models/tiny/infer", body, args.concurrency, 2)
        for round_ in range(1, args.rounds + 1):
            order = ("off", "on") if round_ % 2 else ("on", "off")
            for name in order:
                url = f"{servers[name].url}/v2/models/tiny/infer"
                load = wrk(url, body, args.concurrency, args.duration)
                rates[name].append(load.rps)
                print(f"round {round_} {name:3s} {load.cell()}", flush=True)
        scraped = httpx.get(f"{on_server.url}/metrics").text
        assert 'pitstop_requests_total{model="tiny"' in scraped, "the 'on' server recorded nothing"
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    overhead = 1 - on / off
    print(f"\nmedian req/s: off {off:.0f}, on {on:.0f}")
    print(f"ratio on/off {on / off:.3f}  overhead {overhead:.1%}  (target < 5%)")
    cost_us = recording_cost_us()
    print(
        f"recording per request: {cost_us:.2f} us in-process; at {off:.0f} req/s one request "
        f"takes ~{1e6 / off:.0f} us of server time, so recording is ~{cost_us * off / 1e6:.1%}"
    )


if __name__ == "__main__":
    main()
