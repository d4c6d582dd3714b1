"""This checkout against an earlier commit: the same load on both servers, interleaved.

    .venv/bin/python bench/commits.py [--ref HEAD] [--duration 5] [--rounds 3]

The earlier commit is checked out in a temporary git worktree and served from it (same venv,
``PYTHONPATH`` pointing at the worktree); both servers are up at once with the same registry
home contents (the ONNX export of the tiny classifier, batched and not). Each round loads each
server in turn (HTTP JSON c1 and c64 with wrk, gRPC c64 with h2load); the printed ratio is the
median over rounds of this/ref throughput and p50 latency, so a machine that slows down mid-run
biases neither side. Uncommitted changes count as "this"; ``--ref HEAD`` therefore measures them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from bench.throughput import Load, grpc_body, h2load, json_body, wrk  # noqa: E402
from tests.server import ServerProcess, open_registry  # noqa: E402


@contextmanager
def worktree(ref: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="pitstop-ref-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(folder), ref],
                   check=True)  # fmt: skip
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)],
                       check=False)  # fmt: skip


def registry_home(work: Path) -> Path:
    home = work / "home"
    model = models.tiny_classifier()
    batching = {"max_batch_size": 64, "max_queue_delay_microseconds": 0}
    with open_registry(home) as registry:
        registry.push(models.tiny_onnx_package(work / "p1", model), name="tiny-onnx",
                      aliases=["production"], actor="bench")  # fmt: skip
        registry.push(models.tiny_onnx_package(work / "p2", model, batching),
                      name="tiny-onnx-batched", aliases=["production"], actor="bench")  # fmt: skip
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--this", default="", help="a commit to measure instead of the checkout")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitstop-commits-"))
    body = json_body(work)
    cases = {
        "HTTP JSON tiny-onnx c1": lambda s: wrk(
            f"{s.url}/v2/models/tiny-onnx/infer", body, 1, args.duration
        ),
        "HTTP JSON tiny-onnx-batched c64": lambda s: wrk(
            f"{s.url}/v2/models/tiny-onnx-batched/infer", body, 64, args.duration
        ),
        "gRPC tiny-onnx-batched c64": lambda s: h2load(
            f"http://{s.grpc_target}/inference.GRPCInferenceService/ModelInfer",
            grpc_body(work, "tiny-onnx-batched"),
            64,
            args.duration,
        ),
    }
    cases = {name: run for name, run in cases.items() if args.only in name}
    # Both read one registry; each gets its own copy so neither sees the other's writes.
    home = registry_home(work)
    other = work / "home-ref"
    subprocess.run(["cp", "-a", str(home), str(other)], check=True)
    quiet = {"PITSTOP_LOG_LEVEL": "warning"}
    with worktree(args.ref) as tree, ExitStack() as stack:
        mine = {"PYTHONPATH": str(stack.enter_context(worktree(args.this)))} if args.this else {}
        this = ServerProcess(home, {**quiet, **mine}).start(timeout=120)
        ref = ServerProcess(other, {**quiet, "PYTHONPATH": str(tree)}).start(timeout=120)
        try:
            ratios: dict[str, list[float]] = {name: [] for name in cases}
            p50s: dict[str, list[float]] = {name: [] for name in cases}
            for round_ in range(args.rounds):
                for name, run in cases.items():
                    pair: dict[str, Load] = {}
                    order = (("this", this), ("ref", ref))
                    for side, server in order if round_ % 2 == 0 else order[::-1]:
                        pair[side] = run(server)
                    ratios[name].append(pair["this"].rps / pair["ref"].rps)
                    p50s[name].append(pair["this"].p50_ms / pair["ref"].p50_ms)
                    print(f"round {round_ + 1} {name:34s} this {pair['this'].cell()}  "
                          f"ref {pair['ref'].cell()}", flush=True)  # fmt: skip
        finally:
            this.stop()
            ref.stop()
    print(f"\nthis/{args.ref}, median of {args.rounds} rounds (per-round ratios in brackets)")
    for name in cases:
        rps, p50 = ratios[name], p50s[name]
        print(f"  {name:34s} throughput {statistics.median(rps):.3f} "
              f"({', '.join(f'{v:.3f}' for v in rps)})  p50 {statistics.median(p50):.3f} "
              f"({', '.join(f'{v:.3f}' for v in p50)})")  # fmt: skip


if __name__ == "__main__":
    main()
