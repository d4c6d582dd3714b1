"""What process isolation costs a request: ``predict`` on a [1, 4] FP32 tensor through the
in-process PythonRuntime (the baseline) and through IsolatedRuntime (the same handler in a
worker subprocess), measured in one run, in interleaved rounds.

    .venv/bin/python bench/isolation.py [--calls 2000] [--rounds 4]

The handler is tests/model_factory's default (``y = 2 * x``), so the figures are the runtime's
own overhead: for the isolated one, framing, two pipe writes, two wake-ups and the worker's
decode/encode. Printed: p50 and p99 in ms for each, the time isolation adds at each, and the
ratio to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pitstop.runtimes.base import Runtime  # noqa: E402
from pitstop.runtimes.isolated import IsolatedRuntime  # noqa: E402
from pitstop.runtimes.python import PythonRuntime  # noqa: E402
from tests import model_factory as mf  # noqa: E402
from tests.runtimes.package import read_package  # noqa: E402


def timings(runtime: Runtime, inputs: dict[str, np.ndarray], calls: int) -> list[float]:
    """Seconds per call, ``calls`` calls in a row."""
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        runtime.predict(inputs)
        out.append(time.perf_counter() - started)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per runtime")
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two runtimes")
    args = parser.parse_args()
    folder = mf.make_python_package(Path(tempfile.mkdtemp(prefix="pitstop-isolation-")))
    name, context = read_package(folder, trust_code=True)
    runtimes: dict[str, Runtime] = {
        "in-process": PythonRuntime(context),
        "isolated": IsolatedRuntime(name, context),
    }
    inputs = {"x": np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)}
    measured: dict[str, list[float]] = {label: [] for label in runtimes}
    try:
        for runtime in runtimes.values():
            runtime.load()
            timings(runtime, inputs, 200)  # warm-up
        per_round = max(1, args.calls // args.rounds)
        for _ in range(args.rounds):
            for label, runtime in runtimes.items():
                measured[label] += timings(runtime, inputs, per_round)
    finally:
        for runtime in runtimes.values():
            runtime.unload()
    base = measured["in-process"]
    print(f"{args.calls} calls each, [1, 4] FP32, {args.rounds} interleaved rounds")
    print(f"{'runtime':12} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'x p50':>6}")
    for label, values in measured.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        added50, added99 = p50 - percentile(base, 50), p99 - percentile(base, 99)
        ratio = statistics.median(values) / statistics.median(base)
        print(f"{label:12} {p50:8.3f} {p99:8.3f} {added50:8.3f} {added99:8.3f} {ratio:6.1f}")


if __name__ == "__main__":
    main()
