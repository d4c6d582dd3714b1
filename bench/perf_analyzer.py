"""Triton's perf_analyzer against pitstop, over HTTP and gRPC: a concurrency sweep.

    .venv/bin/python bench/perf_analyzer.py                     # 1,2,4,...,64 on both protocols
    .venv/bin/python bench/perf_analyzer.py --concurrency 1,8 --protocols grpc

The PyPI package ``perf-analyzer`` is an empty placeholder; the real binary ships inside
``tritonclient`` wheels. Releases from 2.52 on need a newer glibc than Debian 12 has, so this
script installs tritonclient 2.47.0 (without its Python dependencies) into its own venv,
``bench/.perf-venv``, with ``libcudart.so.12`` from the ``nvidia-cuda-runtime-cu12`` wheel; the
binary also needs Debian's ``libb64-0d`` (``apt-get install -y libb64-0d``).

It then registers the iris classifier as ONNX (tests/model_factory.py) in a temporary
PITSTOP_HOME, starts ``pitstop serve`` on 127.0.0.1, and runs perf_analyzer once per protocol
and concurrency. perf_analyzer reads the model metadata and configuration first, then sends
random FP32 rows (binary tensors over HTTP, raw contents over gRPC). Printed per row:
throughput (inferences/s) and client-side p50/p99 latency.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import model_factory as mf  # noqa: E402
from tests.server import ServerProcess, open_registry  # noqa: E402

PERF_VENV = ROOT / "bench" / ".perf-venv"
TRITONCLIENT = "tritonclient==2.47.0"
CUDART = "nvidia-cuda-runtime-cu12>=12,<13"
MODEL = "iris"


@dataclass(frozen=True)
class Row:
    protocol: str
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The binary and the environment it runs in; installs it on first use."""
    binary = PERF_VENV / "bin" / "perf_analyzer"
    if not binary.exists():
        print(f"installing {TRITONCLIENT} and {CUDART} into {PERF_VENV} ...", flush=True)
        venv.create(PERF_VENV, with_pip=True)
        pip = [str(PERF_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
        subprocess.run([*pip, TRITONCLIENT, CUDART], check=True)
    cudart = next(PERF_VENV.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    missing = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True)
    if "not found" in missing.stdout:
        lines = [line.strip() for line in missing.stdout.splitlines() if "not found" in line]
        sys.exit(
            "perf_analyzer is missing libraries: "
            + "; ".join(lines)
            + "\n(libb64.so.0d comes from Debian's libb64-0d: apt-get install -y libb64-0d)"
        )
    return binary, env


def model_package(directory: Path, max_batch_size: int) -> Path:
    package = mf.make_onnx_package(directory)
    if max_batch_size:
        manifest = yaml.safe_load((package / mf.MANIFEST).read_text())
        manifest["batching"] = {"max_batch_size": max_batch_size}
        mf.write_manifest(package, manifest)
    return package


def run(
    binary: Path,
    env: dict[str, str],
    server: ServerProcess,
    protocol: str,
    concurrency: int,
    window_ms: int,
    batched: bool,
    workdir: Path,
) -> Row:
    report = workdir / f"{protocol}-{concurrency}.csv"
    url = server.url.removeprefix("http://") if protocol == "http" else server.grpc_target
    command = [
        str(binary),
        *("-m", MODEL, "-i", protocol, "-u", url),
        *("--concurrency-range", f"{concurrency}:{concurrency}"),
        # Stabilise on average latency: p99 over a few seconds on 2 shared cores varies too
        # much between windows to settle. The report still has p50 and p99.
        *("--measurement-interval", str(window_ms), "--stability-percentage", "25"),
        *("--max-trials", "10", "-f", str(report)),
    ]
    if not batched:
        # With max_batch_size 0 the metadata shape [-1, 4] is used as is; fix the -1.
        command += ["--shape", "input:1,4"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        sys.exit(f"perf_analyzer failed ({' '.join(command)}):\n{done.stdout}\n{done.stderr}")
    with report.open() as handle:
        first = next(csv.DictReader(handle))
    return Row(
        protocol=protocol,
        concurrency=concurrency,
        throughput=float(first["Inferences/Second"]),
        p50_ms=float(first["p50 latency"]) / 1000,
        p99_ms=float(first["p99 latency"]) / 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--window-ms", type=int, default=3000, help="measurement interval")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=0,
        help="manifest batching.max_batch_size (0: no batching; perf_analyzer sends [1, 4])",
    )
    args = parser.parse_args()
    binary, env = perf_analyzer()
    levels = [int(level) for level in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="pitstop-perf-"))
    try:
        home = workdir / "home"
        with open_registry(home) as registry:
            package = model_package(workdir / "package", args.max_batch_size)
            registry.push(package, name=MODEL, aliases=("production",), actor="bench")
        server = ServerProcess(home).start()
        try:
            print(f"{'protocol':<8} {'conc':>4} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
            for protocol in protocols:
                for level in levels:
                    row = run(
                        binary, env, server, protocol, level, args.window_ms,
                        args.max_batch_size > 0, workdir,
                    )  # fmt: skip
                    print(
                        f"{row.protocol:<8} {row.concurrency:>4} {row.throughput:>9.1f} "
                        f"{row.p50_ms:>8.2f} {row.p99_ms:>8.2f}",
                        flush=True,
                    )
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
