"""What security costs: the same load on three servers of this checkout, interleaved.

    .venv/bin/python bench/security.py [--duration 5] [--rounds 3]

``open``: loopback, inference authentication off (the default on 127.0.0.1), the baseline.
``token``: ``PITSTOP_INFERENCE_AUTH=on``, every request with ``Authorization: Bearer`` of an
``infer:tiny-*`` token that has a rate limit far above the load (so the bucket is consulted on
every call but never refuses). ``tls+token``: the same over TLS (HTTP/1.1 and gRPC; the load
generators reuse connections, so this is the cost of encryption, not of handshakes). Each round
loads each server in turn (wrk HTTP JSON c1 and c64, h2load gRPC c64); the printed ratios are
medians over rounds of that server's throughput and p50 over the open server's.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.commits import registry_home  # noqa: E402
from bench.throughput import Load, grpc_body, h2load, json_body, wrk  # noqa: E402
from pitstop.security.token import new_secret  # noqa: E402
from tests.security.pki import Authority  # noqa: E402
from tests.server import ServerProcess, open_registry  # noqa: E402

SIDES = ("open", "token", "tls+token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitstop-security-"))
    body = json_body(work)
    grpc_message = grpc_body(work, "tiny-onnx-batched")
    home = registry_home(work)
    secret, digest = new_secret()
    with open_registry(home) as registry:
        registry.tokens.create("bench", digest, ["infer:tiny-*"], actor="bench",
                               rate_limit=1e6, burst=1_000_000)  # fmt: skip
    homes = {side: work / f"home-{index}" for index, side in enumerate(SIDES)}
    for copy in homes.values():
        subprocess.run(["cp", "-a", str(home), str(copy)], check=True)
    ca = Authority(work / "pki")
    issued = ca.issue("localhost", server=True)
    verify = ssl.create_default_context(cafile=str(ca.cert))
    quiet = {"PITSTOP_LOG_LEVEL": "warning"}
    auth = {**quiet, "PITSTOP_INFERENCE_AUTH": "on"}
    tls = {**auth, "PITSTOP_TLS_CERT": str(issued.cert), "PITSTOP_TLS_KEY": str(issued.key)}
    servers = {
        "open": ServerProcess(homes["open"], quiet),
        "token": ServerProcess(homes["token"], auth),
        "tls+token": ServerProcess(homes["tls+token"], tls, verify=verify),
    }
    header = f"Authorization: Bearer {secret}"

    def http(model: str, concurrency: int) -> Callable[[str, ServerProcess], Load]:
        def run(side: str, server: ServerProcess) -> Load:
            extra = "" if side == "open" else header
            return wrk(f"{server.url}/v2/models/{model}/infer", body, concurrency, args.duration,
                       headers=extra)  # fmt: skip

        return run

    def grpc(side: str, server: ServerProcess) -> Load:
        scheme = "https" if side == "tls+token" else "http"
        extra = () if side == "open" else (header.replace("Authorization", "authorization"),)
        return h2load(
            f"{scheme}://127.0.0.1:{server.grpc_port}/inference.GRPCInferenceService/ModelInfer",
            grpc_message, 64, args.duration, headers=extra,
        )  # fmt: skip

    cases = {
        "HTTP JSON tiny-onnx c1": http("tiny-onnx", 1),
        "HTTP JSON tiny-onnx-batched c64": http("tiny-onnx-batched", 64),
        "gRPC tiny-onnx-batched c64": grpc,
    }
    cases = {name: run for name, run in cases.items() if args.only in name}
    started: list[ServerProcess] = []
    try:
        for server in servers.values():
            started.append(server.start(timeout=120))
        rps: dict[tuple[str, str], list[float]] = {}
        p50: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for name, run in cases.items():
                order = SIDES if round_ % 2 == 0 else SIDES[::-1]
                loads = {side: run(side, servers[side]) for side in order}
                for side, load in loads.items():
                    if set(load.statuses) - {200}:
                        sys.exit(f"{name} {side}: statuses {load.statuses}")
                    rps.setdefault((name, side), []).append(load.rps / loads["open"].rps)
                    p50.setdefault((name, side), []).append(load.p50_ms / loads["open"].p50_ms)
                cells = "  ".join(f"{side} {loads[side].cell()}" for side in SIDES)
                print(f"round {round_ + 1} {name:34s} {cells}", flush=True)
    finally:
        for server in started:
            server.stop()
    print(f"\nover open, median of {args.rounds} rounds (per-round ratios in brackets)")
    for name in cases:
        for side in SIDES[1:]:
            r, p = rps[(name, side)], p50[(name, side)]
            print(f"  {name:34s} {side:9s} throughput {statistics.median(r):.3f} "
                  f"({', '.join(f'{v:.3f}' for v in r)})  p50 {statistics.median(p):.3f} "
                  f"({', '.join(f'{v:.3f}' for v in p)})")  # fmt: skip


if __name__ == "__main__":
    main()
