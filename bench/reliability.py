"""Reliability scenarios, run short in ``make test`` (tests/reliability) and long from here.

    .venv/bin/python bench/reliability.py --flips 100 --cycles 200 --workers 4

Each scenario drives a real ``pitstop serve`` process on 127.0.0.1 and prints its figures:
1. swap loop under load: the production alias flips between two versions N times while a
   client pool sends requests; failed requests, versions seen, p99 during swaps vs steady state;
2. failing loads: a corrupt artifact, a load that raises, a failing warm-up, a load that hangs
   past the timeout; failed requests and what serves meanwhile;
3. memory: load/unload cycles through the repository API; server RSS growth;
4. shutdown under load: SIGTERM while clients send; how each request ended, and the exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import LoadLoop, Outcome, failures, percentile
from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry, wait_for

X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def handler(factor: float, load: str = "pass") -> str:
    """Handler source: y = factor * x; ``load`` is the body of its load() method."""
    return (
        "import time\n"
        "import numpy as np\n\n"
        "class Model:\n"
        "    def load(self, path, parameters):\n"
        f"        {load}\n\n"
        "    def predict(self, inputs):\n"
        f"        return {{'y': (inputs['x'] * {factor}).astype(np.float32)}}\n"
    )


def push_handler(
    registry: Registry, folder: Path, model: str, source: str, *aliases: str, **manifest: Any
) -> int:
    mf.make_python_package(folder, source=source)
    if manifest:
        path = folder / "pitstop.yaml"
        document = yaml.safe_load(path.read_text())
        document.update(manifest)
        path.write_text(yaml.safe_dump(document))
    result = registry.push(folder, name=model, aliases=aliases, actor="bench", trust_code=True)
    return result.version.number


# -- 1. swap loop ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwapFigures:
    flips: int
    requests: int
    failed: int
    versions: frozenset[str]
    p99_steady_ms: float
    p99_swaps_ms: float
    longest_switch_s: float

    @property
    def p99_ratio(self) -> float:
        return self.p99_swaps_ms / self.p99_steady_ms if self.p99_steady_ms else float("nan")


def swap_under_load(
    home: Path, url: str, flips: int, workers: int, steady_s: float, max_requests: int
) -> SwapFigures:
    with open_registry(home) as registry:
        work = Path(tempfile.mkdtemp(dir=home))
        v1 = push_handler(registry, work / "a", "swap", handler(2), "production")
        v2 = push_handler(registry, work / "b", "swap", handler(3))
        infer = f"{url}/v2/models/swap/infer"
        if not wait_for(lambda: httpx.post(infer, json=X).status_code == 200, timeout=30):
            raise RuntimeError("swap v1 never became ready")
        with LoadLoop(infer, X, workers=workers, max_requests=max_requests) as load:
            time.sleep(steady_s)
            steady_end = time.monotonic()
            longest = 0.0
            for flip in range(flips):
                target = v2 if flip % 2 == 0 else v1
                moved = time.monotonic()
                registry.set_alias("swap", "production", target, actor="bench")

                def switched(moved: float = moved, target: int = target) -> bool:
                    return any(
                        o.started > moved and o.version == str(target) for o in load.snapshot()
                    )

                if not wait_for(switched, timeout=10, interval=0.01):
                    raise RuntimeError(f"flip {flip} to v{target} not served within 10 s")
                longest = max(longest, time.monotonic() - moved)
            swaps_end = time.monotonic()
            outcomes = load.stop()
    steady = [o.latency * 1000 for o in outcomes if o.ended <= steady_end]
    swaps = [o.latency * 1000 for o in outcomes if steady_end < o.started <= swaps_end]
    return SwapFigures(
        flips=flips,
        requests=len(outcomes),
        failed=len(failures(outcomes)),
        versions=frozenset(o.version for o in outcomes if o.version),
        p99_steady_ms=percentile(steady, 99),
        p99_swaps_ms=percentile(swaps, 99),
        longest_switch_s=longest,
    )


# -- 2. failing loads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureFigures:
    kind: str
    requests: int
    failed: int
    versions: frozenset[str]
    state: str
    error: str


FAILURE_KINDS = ("corrupt", "raises", "warmup", "hangs")


def failing_load(home: Path, url: str, kind: str, workers: int) -> FailureFigures:
    model = f"fail-{kind}"
    with open_registry(home) as registry:
        work = Path(tempfile.mkdtemp(dir=home))
        push_handler(registry, work / "good", model, handler(2), "production")
        infer = f"{url}/v2/models/{model}/infer"
        if not wait_for(lambda: httpx.post(infer, json=X).status_code == 200, timeout=30):
            raise RuntimeError(f"{model} v1 never became ready")
        bad = work / "bad"
        if kind == "raises":
            number = push_handler(registry, bad, model, handler(3, "raise RuntimeError('boom')"))
        elif kind == "hangs":
            number = push_handler(registry, bad, model, handler(3, "time.sleep(3)"))
        elif kind == "warmup":
            expected = [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]
            example = {"inputs": X["inputs"], "expected_outputs": expected}
            number = push_handler(registry, bad, model, handler(3), warmup=[example])
        else:
            number = push_handler(registry, bad, model, handler(3))
            stored = registry.fetch(registry.version(model, number)) / "handler.py"
            stored.chmod(0o644)
            stored.write_text(handler(1000))
        with LoadLoop(infer, X, workers=workers, max_requests=20_000) as load:
            time.sleep(0.2)
            registry.set_alias(model, "production", number, actor="bench")

            def failed() -> bool:
                return any(
                    s.version == number and s.state == "FAILED"
                    for s in registry.serving_states(model)
                )

            settled = wait_for(failed, timeout=30)
            time.sleep(0.2)
            outcomes = load.stop()
        state = next((s for s in registry.serving_states(model) if s.version == number), None)
        registry.set_alias(model, "production", 1, actor="bench", reason="restore")
    return FailureFigures(
        kind=kind,
        requests=len(outcomes),
        failed=len(failures(outcomes)),
        versions=frozenset(o.version for o in outcomes if o.version),
        state=(state.state if state else "UNKNOWN") if settled else "NOT FAILED",
        error=(state.error or "") if state else "",
    )


# -- 3. memory ------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass(frozen=True)
class MemoryFigures:
    cycles: int
    rss_start_mb: float
    rss_end_mb: float

    @property
    def growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb


def memory_cycles(home: Path, server: ServerProcess, cycles: int) -> MemoryFigures:
    with open_registry(home) as registry:
        folder = mf.make_onnx_package(Path(tempfile.mkdtemp(dir=home)) / "onnx")
        registry.push(folder, name="mem", aliases=["production"], actor="bench")
    token = (home / "admin.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}
    assert server.process is not None
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        if not wait_for(lambda: client.post("/v2/models/mem/infer", json=body).is_success, 30):
            raise RuntimeError("mem never became ready")
        # Warm the allocator with a few cycles before the baseline.
        for phase, count in (("warm", min(10, cycles)), ("measure", cycles)):
            if phase == "measure":
                start = rss_mb(server.process.pid)
            for _ in range(count):
                client.post("/v2/repository/models/mem/unload").raise_for_status()
                client.post("/v2/repository/models/mem/load").raise_for_status()
                client.post("/v2/models/mem/infer", json=body).raise_for_status()
    return MemoryFigures(cycles, start, rss_mb(server.process.pid))


# -- 4. shutdown under load -----------------------------------------------------------------------


@dataclass(frozen=True)
class ShutdownFigures:
    exit_code: int | None
    ready_went_false_s: float
    outcomes: dict[str, int]
    """Counts by how requests ended: 200, refused (after readiness went false), or cut."""

    @property
    def cut(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if kind not in ("200", "refused"))


def classify(outcome: Outcome) -> str:
    if outcome.status is not None:
        return str(outcome.status)
    return (
        "refused" if outcome.error in ("ConnectError", "ConnectTimeout") else outcome.error or "?"
    )


def shutdown_under_load(home: Path, workers: int, grace_s: float) -> ShutdownFigures:
    with open_registry(home) as registry:
        folder = Path(tempfile.mkdtemp(dir=home)) / "slow"
        push_handler(
            registry,
            folder,
            "slow",
            handler(2).replace(
                "    def predict(self, inputs):\n",
                "    def predict(self, inputs):\n        time.sleep(0.02)\n",
            ),
            "production",
        )
    server = ServerProcess(home, {"PITSTOP_SHUTDOWN_GRACE_S": str(grace_s)}).start()
    assert server.process is not None
    infer = f"{server.url}/v2/models/slow/infer"
    try:
        with LoadLoop(infer, X, workers=workers, max_requests=50_000) as load:
            time.sleep(0.5)
            sent = time.monotonic()
            os.kill(server.process.pid, signal.SIGTERM)
            went_false = float("nan")
            while time.monotonic() - sent < grace_s + 5:
                try:
                    if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 503:
                        went_false = time.monotonic() - sent
                        break
                except httpx.TransportError:
                    break
                time.sleep(0.01)
            code = server.process.wait(timeout=grace_s + 40)
            time.sleep(0.2)
            outcomes = load.stop()
    finally:
        server.stop()
    return ShutdownFigures(code, went_false, dict(Counter(classify(o) for o in outcomes)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--flips", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steady-s", type=float, default=5.0)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pitstop-reliability-"))
    env = {
        "PITSTOP_LOAD_TIMEOUT_S": "1",
        "PITSTOP_LOAD_RETRIES": "1",
        "PITSTOP_LOAD_RETRY_BACKOFF_S": "0.1",
    }
    with ServerProcess(home / "main", env) as server:
        swap = swap_under_load(
            home / "main",
            server.url,
            args.flips,
            args.workers,
            args.steady_s,
            max_requests=2_000_000,
        )
        print(
            f"swap loop: {swap.flips} flips, {swap.requests} requests, failed={swap.failed}, "
            f"versions={sorted(swap.versions)}, p99 steady={swap.p99_steady_ms:.2f} ms, "
            f"p99 during swaps={swap.p99_swaps_ms:.2f} ms, ratio={swap.p99_ratio:.2f}, "
            f"longest switch={swap.longest_switch_s:.2f} s"
        )
        for kind in FAILURE_KINDS:
            fail = failing_load(home / "main", server.url, kind, args.workers)
            print(
                f"failing load ({kind}): {fail.requests} requests, failed={fail.failed}, "
                f"served={sorted(fail.versions)}, state={fail.state}: {fail.error}"
            )
        memory = memory_cycles(home / "main", server, args.cycles)
        print(
            f"memory: {memory.cycles} unload/load cycles, RSS {memory.rss_start_mb:.1f} → "
            f"{memory.rss_end_mb:.1f} MB, growth={memory.growth_mb:.1f} MB"
        )
    shutdown = shutdown_under_load(home / "shutdown", args.workers, grace_s=2.0)
    print(
        f"shutdown under load: exit code={shutdown.exit_code}, readiness false after "
        f"{shutdown.ready_went_false_s * 1000:.0f} ms, outcomes={shutdown.outcomes}, "
        f"cut={shutdown.cut}"
    )


if __name__ == "__main__":
    main()
