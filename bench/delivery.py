"""Shadow traffic overhead: primary p99 with a 100% shadow vs without, same run.

    .venv/bin/python bench/delivery.py [--duration 8] [--concurrency 8]

One server, two identical tiny-ONNX models (A and B, each with a second version). B's policy
copies every request to its second version (shadow rate 1.0); A has none. Two kinds of load,
each on A and B alternately, twice:

- closed loop (wrk, ``--concurrency`` connections, each sending as soon as it has its answer):
  the server is always busy, so a shadow's extra model call necessarily slows the primary;
- open loop (``--load`` fractions of A's closed-loop throughput, Poisson arrivals, latency from
  each request's scheduled time): traffic as users send it, whatever the server is doing.

Prints primary p50/p99 with and without the shadow and their ratio per load.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from bench.loadgen import open_loop  # noqa: E402
from bench.throughput import json_body, pitstop_server, wrk  # noqa: E402
from pitstop.registry import Shadow, TrafficPolicy  # noqa: E402
from tests.server import open_registry  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--load", default="0.25,0.5", help="open-loop rates, as fractions of A's throughput"
    )
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
                print(f"  closed loop c{args.concurrency} {name:9s} {load.cell()}", flush=True)
        capacity = max(rps["plain"])
        port = int(server.url.rsplit(":", 1)[1])
        payload = body.read_bytes()
        open_p99: dict[tuple[float, str], list[float]] = {}
        for fraction in (float(f) for f in args.load.split(",")):
            for _ in range(2):
                for name in ("plain", "shadowed"):
                    run = asyncio.run(
                        open_loop(port, f"/v2/models/{name}/infer", payload,
                                  fraction * capacity, args.duration)
                    )  # fmt: skip
                    open_p99.setdefault((fraction, name), []).append(run.p(99))
                    print(
                        f"  open loop {fraction:.0%} ({run.offered_rps:,.0f}/s) {name:9s} "
                        f"p50 {run.p(50):.2f} p99 {run.p(99):.2f} ms, failed {run.failed}",
                        flush=True,
                    )
    best = {name: min(values) for name, values in p99.items()}
    print(
        f"\nclosed loop: primary p99 without shadow {best['plain']:.2f} ms, with a 100% shadow "
        f"{best['shadowed']:.2f} ms: ratio {best['shadowed'] / best['plain']:.2f}; "
        f"throughput ratio {max(rps['shadowed']) / max(rps['plain']):.2f}"
    )
    for fraction in sorted({f for f, _name in open_p99}):
        plain, shadowed = (min(open_p99[(fraction, n)]) for n in ("plain", "shadowed"))
        print(
            f"open loop at {fraction:.0%} of capacity: primary p99 {plain:.2f} ms without, "
            f"{shadowed:.2f} ms with a 100% shadow: ratio {shadowed / plain:.2f}"
        )


if __name__ == "__main__":
    main()
