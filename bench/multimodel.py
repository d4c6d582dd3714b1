"""Many models on one node, against real servers on 127.0.0.1: what a cold start costs by model
size, what process isolation adds to a request end to end, and the server's RSS as models pile
up, without and with a memory budget.

    .venv/bin/python bench/multimodel.py [--quick] [--sizes 1,8,32,128] [--repeats 5]
        [--warm 50] [--requests 2000] [--rounds 8] [--counts 0,10,20,40,60] [--budget-mib 100]

1. Cold starts (``PITSTOP_LOAD_POLICY=on-demand``, ``PITSTOP_ON_DEMAND_MAX=1``): ONNX models of
   each size (tests/residency/models.make_weighted_onnx). Each measurement first asks a 1 MiB
   spacer model (which evicts whatever was resident), then the sized model: its first request
   is the cold start (client-measured, so it includes evicting the spacer, fetching and
   verifying the artifact, loading, warming up and answering), then ``--warm`` requests
   give the warm baseline in the same run. Printed per size: median/min/max cold ms over
   ``--repeats`` cold starts, warm p50, their ratio, and the server's own
   ``pitstop_cold_start_seconds`` sum/count (load time, no HTTP).
2. Isolation end to end: the same trivial python handler pushed twice, ``isolation: none``
   (the baseline) and the default (a worker process); ``--requests`` sequential JSON requests
   of a [1, 4] FP32 tensor to each over one keep-alive httpx.Client, in ``--rounds``
   interleaved rounds (order flipped every round). Printed: p50/p99 and what isolation adds;
   then the same handler measured directly through the runtimes, without HTTP, with
   bench/isolation.py's ``timings``.
3. RSS vs models: 8 MiB ONNX models loaded on demand with no budget (``PITSTOP_ON_DEMAND_MAX``
   large), one request each, the server's VmRSS (from /proc) after 0, 10, ... models, and
   what the server accounts for (``pitstop_memory_used_bytes``); then a fresh server with
   ``PITSTOP_MEMORY_BUDGET`` cycling every model twice: start/peak/end RSS, versions resident
   at the end (``pitstop_version_memory_bytes`` samples), cold starts and evictions.

Every server is started with tests.server.ServerProcess and stopped before the script ends.
Drift monitoring is off (``PITSTOP_DRIFT_ENABLED=false``) to keep background work out of the
figures.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.isolation import timings  # noqa: E402
from pitstop.runtimes.base import Runtime  # noqa: E402
from pitstop.runtimes.isolated import IsolatedRuntime  # noqa: E402
from pitstop.runtimes.python import PythonRuntime  # noqa: E402
from tests.residency.models import make_handler, make_weighted_onnx  # noqa: E402
from tests.runtimes.package import read_package  # noqa: E402
from tests.server import ServerProcess, open_registry  # noqa: E402

BASE_ENV = {"PITSTOP_DRIFT_ENABLED": "false"}
BODY: dict[str, object] = {
    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]
}
MIB = 1 << 20


# -- helpers ---------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else float("nan")


def metric(text: str, name: str) -> dict[str, float]:
    """Label text (``{model="m"}``, or "" without labels) → value of every sample of ``name``."""
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
    }


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def infer(client: httpx.Client, model: str) -> float:
    """Seconds one request to ``model`` took; raises on anything but 200."""
    started = time.perf_counter()
    answer = client.post(f"/v2/models/{model}/infer", json=BODY)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"{model}: {answer.status_code} {answer.text}")
    return elapsed


@contextmanager
def serving(home: Path, env: dict[str, str]) -> Iterator[tuple[httpx.Client, int]]:
    """A keep-alive client of a started server, and the server's PID; the server is stopped
    however the block ends."""
    server = ServerProcess(home, {**BASE_ENV, **env})
    try:
        server.start(timeout=120)
        assert server.process is not None
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield client, server.process.pid
    finally:
        server.stop()


# -- 1. cold starts by size ------------------------------------------------------------------


@dataclass
class ColdRow:
    mib: float
    cold: list[float]
    warm: list[float]
    server_sum: float
    server_count: float


def cold_starts(root: Path, sizes: list[float], repeats: int, warm: int) -> list[ColdRow]:
    home = root / "cold"
    with open_registry(home) as registry:
        specs = [("spacer", 1.0, 999), *((f"s{m:g}", m, i) for i, m in enumerate(sizes))]
        for name, mib, seed in specs:
            folder = make_weighted_onnx(root / "src" / name, mib, seed=seed)
            registry.push(folder, name=name, aliases=["production"], actor="bench")
    env = {"PITSTOP_LOAD_POLICY": "on-demand", "PITSTOP_ON_DEMAND_MAX": "1"}
    cold: dict[float, list[float]] = {m: [] for m in sizes}
    warmed: dict[float, list[float]] = {m: [] for m in sizes}
    with serving(home, env) as (client, _pid):
        for _ in range(2):  # the first ONNX load in a process pays for more than the model
            infer(client, "spacer")
        for _ in range(repeats):
            for mib in sizes:
                infer(client, "spacer")  # evicts the sized model of the last round
                infer(client, "spacer")
                cold[mib].append(infer(client, f"s{mib:g}"))  # evicts the 1 MiB spacer
                warmed[mib] += [infer(client, f"s{mib:g}") for _ in range(warm)]
        text = client.get("/metrics").text
        started = metric(text, "pitstop_cold_starts_total")
    sums = metric(text, "pitstop_cold_start_seconds_sum")
    counts = metric(text, "pitstop_cold_start_seconds_count")
    rows = []
    for mib in sizes:
        label = f'{{model="s{mib:g}"}}'
        assert started.get(label) == repeats, (label, started)
        rows.append(ColdRow(mib, cold[mib], warmed[mib], sums[label], counts[label]))
    return rows


def print_cold(rows: list[ColdRow], repeats: int, warm: int) -> None:
    print(
        f"\n1. Cold start by model size (on-demand, ON_DEMAND_MAX=1; {repeats} cold starts "
        f"per size, {warm} warm requests after each)"
    )
    head = f"{'MiB':>5} {'cold ms':>8} {'min':>7} {'max':>7} {'warm p50':>9} {'x warm':>7}"
    print(f"{head} {'server mean ms':>15} {'n':>3}")
    for row in rows:
        cold = statistics.median(row.cold) * 1000
        warm50 = ms(row.warm, 50)
        server = row.server_sum / row.server_count * 1000 if row.server_count else float("nan")
        print(
            f"{row.mib:5g} {cold:8.1f} {min(row.cold) * 1000:7.1f} {max(row.cold) * 1000:7.1f}"
            f" {warm50:9.3f} {cold / warm50:7.0f} {server:15.1f} {row.server_count:3.0f}"
        )
    print(
        "  cold ms: client-measured first request (median/min/max); server mean: "
        "pitstop_cold_start_seconds sum/count"
    )


# -- 2. isolation end to end -----------------------------------------------------------------


def isolation(root: Path, requests: int, rounds: int) -> dict[str, list[float]]:
    home = root / "isolation"
    with open_registry(home) as registry:
        sections: dict[str, dict[str, object] | None] = {"inproc": {"mode": "none"}, "worker": None}
        for name, section in sections.items():
            folder = make_handler(root / "src" / name, "calm", section)
            registry.push(folder, name=name, aliases=["production"], actor="bench", trust_code=True)
    measured: dict[str, list[float]] = {"inproc": [], "worker": []}
    with serving(home, {}) as (client, _pid):
        for name in measured:
            for _ in range(300):  # warm-up: connection, code paths, the worker's pipe
                infer(client, name)
        per_round = max(1, requests // rounds)
        for index in range(rounds):
            order = list(measured) if index % 2 == 0 else list(reversed(measured))
            for name in order:
                measured[name] += [infer(client, name) for _ in range(per_round)]
        text = client.get("/metrics").text
    restarts = metric(text, "pitstop_worker_restarts_total")
    if any(restarts.values()):
        print(f"  (worker restarts during the run: {restarts})")
    return measured


def direct_isolation(root: Path, calls: int, rounds: int) -> dict[str, list[float]]:
    """The same handler through PythonRuntime and IsolatedRuntime in this process (no HTTP)."""
    name, context = read_package(root / "src" / "worker", trust_code=True)
    runtimes: dict[str, Runtime] = {
        "inproc": PythonRuntime(context),
        "worker": IsolatedRuntime(name, context),
    }
    inputs = {"x": np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)}
    measured: dict[str, list[float]] = {label: [] for label in runtimes}
    try:
        for runtime in runtimes.values():
            runtime.load()
            timings(runtime, inputs, 200)
        for index in range(rounds):
            order = list(runtimes) if index % 2 == 0 else list(reversed(runtimes))
            for label in order:
                measured[label] += timings(runtimes[label], inputs, max(1, calls // rounds))
    finally:
        for runtime in runtimes.values():
            runtime.unload()
    return measured


def print_isolation(title: str, measured: dict[str, list[float]]) -> None:
    print(title)
    base = measured["inproc"]
    print(f"{'handler':22} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'x p50':>6}")
    for label, values in measured.items():
        p50, p99 = ms(values, 50), ms(values, 99)
        name = "isolation: none" if label == "inproc" else "isolation: process"
        print(
            f"{name:22} {p50:8.3f} {p99:8.3f} {p50 - ms(base, 50):8.3f}"
            f" {p99 - ms(base, 99):8.3f} {p50 / ms(base, 50):6.2f}"
        )


# -- 3. RSS vs number of models --------------------------------------------------------------


def push_many(home: Path, root: Path, models: int, mib: float) -> None:
    with open_registry(home) as registry:
        for index in range(models):
            folder = make_weighted_onnx(root / "src" / f"m{index:02d}", mib, seed=100 + index)
            registry.push(folder, name=f"m{index:02d}", aliases=["production"], actor="bench")
            shutil.rmtree(folder)


def rss_growth(home: Path, counts: list[int]) -> list[tuple[int, float, float]]:
    """(models loaded, VmRSS MiB, server-accounted MiB) at each count."""
    env = {"PITSTOP_LOAD_POLICY": "on-demand", "PITSTOP_ON_DEMAND_MAX": "1000"}
    rows = []
    with serving(home, env) as (client, pid):
        loaded = 0
        for count in counts:
            while loaded < count:
                infer(client, f"m{loaded:02d}")
                loaded += 1
            time.sleep(0.3)  # let unrelated start-up/after-load work settle
            used = metric(client.get("/metrics").text, "pitstop_memory_used_bytes").get("", 0.0)
            rows.append((count, rss_mib(pid), used / MIB))
    return rows


@dataclass
class BudgetRun:
    start: float
    peak: float
    end: float
    resident: int
    used_mib: float
    cold_starts: float
    evictions: float
    statuses: Counter[int]
    seconds: float


def budget_cycle(home: Path, models: int, budget_mib: int, cycles: int) -> BudgetRun:
    env = {"PITSTOP_LOAD_POLICY": "on-demand", "PITSTOP_MEMORY_BUDGET": f"{budget_mib}MiB"}
    statuses: Counter[int] = Counter()
    with serving(home, env) as (client, pid):
        start = peak = rss_mib(pid)
        began = time.perf_counter()
        for _ in range(cycles):
            for index in range(models):
                answer = client.post(f"/v2/models/m{index:02d}/infer", json=BODY)
                statuses[answer.status_code] += 1
                peak = max(peak, rss_mib(pid))
        seconds = time.perf_counter() - began
        time.sleep(0.3)
        end = rss_mib(pid)
        text = client.get("/metrics").text
    return BudgetRun(
        start=start,
        peak=peak,
        end=end,
        resident=len(metric(text, "pitstop_version_memory_bytes")),
        used_mib=metric(text, "pitstop_memory_used_bytes").get("", 0.0) / MIB,
        cold_starts=sum(metric(text, "pitstop_cold_starts_total").values()),
        evictions=sum(metric(text, "pitstop_evictions_total").values()),
        statuses=statuses,
        seconds=seconds,
    )


def print_rss(rows: list[tuple[int, float, float]], mib: float) -> None:
    print(f"\n3. Server RSS vs models loaded ({mib:g} MiB ONNX each, on-demand, no budget)")
    print(f"{'models':>6} {'RSS MiB':>8} {'+MiB':>7} {'MiB/model':>9} {'accounted MiB':>14}")
    base = rows[0][1]
    for count, rss, used in rows:
        per = f"{(rss - base) / count:9.1f}" if count else f"{'-':>9}"
        print(f"{count:6d} {rss:8.1f} {rss - base:7.1f} {per} {used:14.1f}")
    print("  accounted: pitstop_memory_used_bytes (what the server measured per version at load)")


def print_budget(run: BudgetRun, models: int, budget_mib: int, cycles: int) -> None:
    print(
        f"\n   with PITSTOP_MEMORY_BUDGET={budget_mib}MiB, {models} models cycled {cycles}x "
        f"({sum(run.statuses.values())} requests in {run.seconds:.1f} s)"
    )
    print(
        f"   RSS start {run.start:.1f} MiB, peak {run.peak:.1f} MiB "
        f"(+{run.peak - run.start:.1f}), end {run.end:.1f} MiB"
    )
    print(
        f"   resident at the end: {run.resident} versions, accounted {run.used_mib:.1f} MiB; "
        f"cold starts {run.cold_starts:.0f}, evictions {run.evictions:.0f}"
    )
    print(f"   statuses: {dict(run.statuses)}")


# -- main ------------------------------------------------------------------------------------


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument("--sizes", type=floats, help="model sizes in MiB (1,8,32,128)")
    parser.add_argument("--repeats", type=int, help="cold starts per size (5)")
    parser.add_argument("--warm", type=int, help="warm requests after each cold start (50)")
    parser.add_argument("--requests", type=int, help="requests per handler (2000)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (8)")
    parser.add_argument("--counts", type=ints, help="models loaded at each RSS reading")
    parser.add_argument("--model-mib", type=float, default=8, help="size of the RSS models")
    parser.add_argument("--budget-mib", type=int, default=100, help="PITSTOP_MEMORY_BUDGET")
    parser.add_argument("--cycles", type=int, default=2, help="passes over every model")
    args = parser.parse_args()
    quick = args.quick
    sizes = args.sizes or ([1, 8, 32] if quick else [1, 8, 32, 128])
    repeats = args.repeats or (3 if quick else 5)
    warm = args.warm or (20 if quick else 50)
    requests = args.requests or (500 if quick else 2000)
    counts = args.counts or ([0, 5, 10, 20] if quick else [0, 10, 20, 40, 60])
    models = max(counts)

    root = Path(tempfile.mkdtemp(prefix="pitstop-multimodel-"))
    began = time.perf_counter()
    try:
        rows = cold_starts(root, sizes, repeats, warm)
        print_cold(rows, repeats, warm)

        measured = isolation(root, requests, args.rounds)
        print_isolation(
            f"\n2. Isolation per request, end to end ({requests} sequential HTTP requests each, "
            f"[1, 4] FP32 JSON, keep-alive, {args.rounds} interleaved rounds)",
            measured,
        )
        direct = direct_isolation(root, requests, args.rounds)
        print_isolation(
            f"\n   the same handler called directly (no HTTP; bench/isolation.py timings, "
            f"{requests} calls each)",
            direct,
        )

        home = root / "many"
        push_many(home, root, models, args.model_mib)
        print_rss(rss_growth(home, counts), args.model_mib)
        run = budget_cycle(home, models, args.budget_mib, args.cycles)
        print_budget(run, models, args.budget_mib, args.cycles)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n(total {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
