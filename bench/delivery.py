"""Shadow traffic overhead: primary p99 with a 100% shadow vs without, same run.

    .venv/bin/python bench/delivery.py [--duration 8] [--concurrency 8]

One server, two identical tiny-ONNX models (A and B, each with a second version). B's policy
copies every request to its second version (shadow rate 1.0); A has none. wrk loads A and B
alternately, twice each, and the script prints the primary p99 of each and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from bench.throughput import json_body, pitstop_server, wrk  # noqa: E402
from pitstop.registry import Shadow, TrafficPolicy  # noqa: E402
from tests.server import open_registry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitstop-delivery-"))
    home = work / "home"
    classifier = models.tiny_classifier()
    with open_registry(home) as registry:
        for name in ("plain", "shadowed"):
            primary = models.tiny_onnx_package(work / f"{name}-1", classifier)
            registry.push(primary, name=name, aliases=["production"], actor="bench")
            second = models.tiny_onnx_package(work / f"{name}-2", models.tiny_classifier())
            (second / "note.txt").write_text("second version")  # a different digest
            registry.push(second, name=name, aliases=["candidate"], actor="bench")
        registry.delivery.set_policy(
            "shadowed", TrafficPolicy(shadows=(Shadow("candidate", 1.0),)), actor="bench"
        )
    body = json_body(work)
    p99: dict[str, list[float]] = {"plain": [], "shadowed": []}
    rps: dict[str, list[float]] = {"plain": [], "shadowed": []}
    with pitstop_server(home) as server:
        for _ in range(2):
            for name in ("plain", "shadowed"):
                load = wrk(
                    f"{server.url}/v2/models/{name}/infer", body, args.concurrency, args.duration
                )
                p99[name].append(load.p99_ms)
                rps[name].append(load.rps)
                print(f"  {name:9s} {load.cell()}", flush=True)
    best = {name: min(values) for name, values in p99.items()}
    print(
        f"\nprimary p99 without shadow {best['plain']:.2f} ms, with a 100% shadow "
        f"{best['shadowed']:.2f} ms: ratio {best['shadowed'] / best['plain']:.2f}"
    )
    print(f"throughput ratio (shadowed / plain): {max(rps['shadowed']) / max(rps['plain']):.2f}")


if __name__ == "__main__":
    main()
