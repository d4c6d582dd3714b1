"""The ``--workers N`` rows of bench/throughput.py: pitstop with N worker processes against
MLServer's best configuration on the same model, and against the bare echo app with N uvicorn
workers, all up at once and loaded in turn, round after round; the printed ratios are medians
of per-round ratios (see section 7 of throughput.py for why).

    .venv/bin/python bench/throughput.py --workers 2 --sections workers [--rounds 5]

MLServer's configurations: one process without and with adaptive batching, and with
``parallel_workers: N`` (its inference pool; HTTP and gRPC stay in one process). Its best at
each level (highest throughput, lowest c1 p50) is the baseline.
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import models
from bench.throughput import (
    Load,
    cpu_seconds,
    echo_server,
    grpc_body,
    h2load,
    mlserver,
    pitstop_server,
    wrk,
)

GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def run(work: Path, model: Any, home: Path, body: Path, args: Any) -> None:
    workers: int = args.workers
    print(f"\n# 8. {workers} workers: {args.rounds} rounds, each server loaded in turn")
    with ExitStack() as stack:
        echo, echo_pid = stack.enter_context(echo_server(workers))
        server = stack.enter_context(pitstop_server(home, {"PITSTOP_WORKERS": str(workers)}))
        assert server.process is not None
        grpc_url = f"http://127.0.0.1:{server.grpc_port}{GRPC_PATH}"
        # label → (c64 url, c1 url, pid, gRPC url and body or None)
        targets: dict[str, tuple[str, str, int, tuple[str, Path] | None]] = {
            f"echo x{workers}": (f"{echo}/v2/models/m/infer",) * 2 + (echo_pid, None),
            f"pitstop x{workers}": (
                f"{server.url}/v2/models/tiny-onnx-batched/infer",
                f"{server.url}/v2/models/tiny-onnx/infer",
                server.process.pid,
                (grpc_url, grpc_body(work, "tiny-onnx-batched")),
            ),
        }
        mlservers = {
            "MLServer plain": (False, 0),
            "MLServer adaptive": (True, 0),
            f"MLServer parallel {workers}": (False, workers),
        }
        ml_grpc_body = grpc_body(work, "tiny")
        for label, (adaptive, parallel) in mlservers.items():
            folder = work / f"mlserver-workers-{adaptive}-{parallel}" / "tiny"
            models.mlserver_model(folder, model, adaptive)
            url, grpc_port, pid = stack.enter_context(mlserver(folder.parent, parallel))
            targets[label] = (
                f"{url}/v2/models/tiny/infer", f"{url}/v2/models/tiny/infer", pid,
                (f"http://127.0.0.1:{grpc_port}{GRPC_PATH}", ml_grpc_body),
            )  # fmt: skip
        for url64, url1, _pid, _grpc in targets.values():  # warm up before round 1
            wrk(url64, body, 64, 2)
            wrk(url1, body, 1, 1)
        rounds: list[dict[str, tuple[Load, Load, Load | None, float]]] = []
        for number in range(1, args.rounds + 1):
            measured: dict[str, tuple[Load, Load, Load | None, float]] = {}
            for label, (url64, url1, pid, grpc) in targets.items():
                before = cpu_seconds(pid)
                c64 = wrk(url64, body, 64, args.duration)
                cpu_us = (cpu_seconds(pid) - before) / (c64.rps * args.duration) * 1e6
                c1 = wrk(url1, body, 1, args.duration)
                g64 = h2load(grpc[0], grpc[1], 64, args.duration) if grpc else None
                measured[label] = (c64, c1, g64, cpu_us)
                grpc_cell = f"   gRPC c64 {g64.cell()}" if g64 else ""
                print(
                    f"  round {number} {label:20s} c64 {c64.cell()} ({cpu_us:.0f} µs CPU/req)"
                    f"   c1 {c1.cell()}{grpc_cell}",
                    flush=True,
                )
            rounds.append(measured)
    ours, echo_label = f"pitstop x{workers}", f"echo x{workers}"
    ml = list(mlservers)

    def ratio(values: list[float]) -> float:
        return statistics.median(values)

    http = ratio([r[ours][0].rps / max(r[k][0].rps for k in ml) for r in rounds])
    grpc = ratio(
        [r[ours][2].rps / max(r[k][2].rps for k in ml if r[k][2]) for r in rounds if r[ours][2]]
    )
    p50 = ratio([r[ours][1].p50_ms / min(r[k][1].p50_ms for k in ml) for r in rounds])
    echo_ratio = ratio([r[ours][0].rps / r[echo_label][0].rps for r in rounds])
    print(f"  median pitstop x{workers} / MLServer's best at c64 (HTTP JSON): {http:.2f}  goal 6")
    print(f"  median pitstop x{workers} / MLServer's best gRPC at c64: {grpc:.2f}  goal 3")
    print(f"  median pitstop x{workers} p50 / MLServer's best p50 at c1: {p50:.2f}  goal 0.33")
    print(f"  median pitstop x{workers} / echo x{workers} at c64 (HTTP JSON): {echo_ratio:.2f}"
          "  goal 0.6")  # fmt: skip
    costs = {label: ratio([r[label][3] for r in rounds]) for label in targets}
    print("  median CPU per request at c64 (process tree user+sys / requests): "
          + ", ".join(f"{label} {value:.0f} µs" for label, value in costs.items()))  # fmt: skip
