"""Batch scoring throughput and memory: ``pitstop batch --engine local`` against the runtime's own
in-process predict, in one run on the same cores.

    .venv/bin/python bench/batch.py [--rows 20000] [--batch-size 1024]

1. in-process limit: onnxruntime (1 intra-op thread, as each batch worker uses) predicting rows
   from numpy at the same batch size, no I/O, for two models: the tiny classifier (inference
   nearly free: the run is all I/O and conversion) and a ~8M-multiply-per-row MLP;
2. ``pitstop batch`` on Parquet files of those rows (20 float columns + an id kept), with
   ``--workers 1`` and ``--workers 2``, in steady state: each configuration runs on N and 5N
   rows and the rate is 4N / (difference in wall time), so process start-up, imports and the
   model load cancel out; the ratio to (1) is per worker;
   With ``--ray``: the MLP on a two-node Ray cluster on this machine against the local engine;
3. memory: the tiny model on an input 10x larger than the rows in flight
   (``--part-rows`` x (workers + 1)): peak RSS of the largest process, which should stay flat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from tests.server import open_registry  # noqa: E402


def parquet(path: Path, rows: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, rows, 100_000):
        x = models.rows(min(100_000, rows - start), seed=start)
        table = pa.table({"id": np.arange(start, start + len(x)),
                          **{f"f{i}": x[:, i] for i in range(models.FEATURES)}})  # fmt: skip
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return path


def in_process(package: Path, batch: int, seconds: float = 3.0) -> float:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(package / "model.onnx"), options)
    x = models.rows(20_000)
    name = session.get_inputs()[0].name
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        for begin in range(0, len(x), batch):
            session.run(None, {name: x[begin : begin + batch]})
            done += len(x[begin : begin + batch])
            if time.perf_counter() - started >= seconds:
                break
    return done / (time.perf_counter() - started)


WRAPPER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
"""Runs a command and prints the peak RSS (KiB) of the largest process it waited for."""


def run_batch(
    home: Path,
    model: str,
    source: Path,
    out: Path,
    workers: int,
    batch: int,
    part_rows: int,
    engine: tuple[str, ...] = (),
) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the largest process) of one ``pitstop batch`` run;
    ``engine`` adds options (``--engine ray ...``)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, sys.executable, "-m", "pitstop", "batch", model,
         str(source), str(out), "--keep", "id", "--workers", str(workers), "--batch-size",
         str(batch), "--part-rows", str(part_rows), "--json", *engine],
        env={**os.environ, "PITSTOP_HOME": str(home)}, check=True, capture_output=True,
        text=True,
    )  # fmt: skip
    return time.perf_counter() - started, int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000, help="N for the MLP (x20 tiny)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--part-rows", type=int, default=10_000)
    parser.add_argument("--ray", action="store_true", help="also: --engine ray vs local, MLP")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitstop-batch-bench-"))
    packages = {
        "tiny": models.tiny_onnx_package(work / "tiny", models.tiny_classifier()),
        "mlp": models.mlp_onnx_package(work / "mlp"),
    }
    home = work / "home"
    with open_registry(home) as registry:
        for name, package in packages.items():
            registry.push(package, name=name, aliases=["production"], actor="bench")
    print(f"# 1-2. rows/s at batch {args.batch_size}: in-process (1 thread) vs pitstop batch "
          "(steady state)")  # fmt: skip
    for name, package in packages.items():
        limit = in_process(package, args.batch_size)
        n = args.rows * (20 if name == "tiny" else 1)
        small, large = (
            parquet(work / f"{name}-n.parquet", n),
            parquet(work / f"{name}-5n.parquet", 5 * n),
        )
        line = f"  {name:5s} in-process {limit:>12,.0f}"
        for workers in (1, 2):
            t1, _ = run_batch(home, name, small, work / f"o-{name}-{workers}-1", workers,
                              args.batch_size, args.part_rows)  # fmt: skip
            t5, _ = run_batch(home, name, large, work / f"o-{name}-{workers}-5", workers,
                              args.batch_size, args.part_rows)  # fmt: skip
            rate = 4 * n / (t5 - t1)
            line += (
                f" | --workers {workers} {rate:>10,.0f} ({rate / limit / workers:.2f} per worker)"
            )
        print(line, flush=True)
    if args.ray:
        ray_rows(work, home, args)
    in_flight = args.part_rows * 2
    n = in_flight * 10
    print(f"# 3. peak RSS, tiny, --workers 1, {in_flight:,} rows in flight")
    for rows in (n // 10, n, n * 4):
        source = parquet(work / f"mem-{rows}.parquet", rows)
        _, peak = run_batch(home, "tiny", source, work / f"mem-{rows}", 1, args.batch_size,
                            args.part_rows)  # fmt: skip
        print(f"  {rows:>10,} rows: {peak:,.0f} MiB", flush=True)


def ray_rows(work: Path, home: Path, args: argparse.Namespace) -> None:
    """The MLP on a two-node Ray cluster on this machine (2 actors, half a CPU each) against
    the local engine with 2 workers, in steady state (N and 5N rows)."""
    from tests.ray_cluster import ENV, ray_cluster

    os.environ.update({k: v for k, v in ENV.items() if k.startswith("RAY_")})
    n = args.rows
    small, large = parquet(work / "ray-n.parquet", n), parquet(work / "ray-5n.parquet", 5 * n)
    rates = {}
    with ray_cluster(work / "ray") as address:
        engines = {
            "local, 2 workers": ("--engine", "local"),
            "ray, 2 actors": ("--engine", "ray", "--address", address, "--concurrency", "2",
                              "--actor-cpus", "0.5"),
        }  # fmt: skip
        for label, engine in engines.items():
            t1, _ = run_batch(home, "mlp", small, work / f"r-{len(rates)}-1", 2, args.batch_size,
                              args.part_rows, engine)  # fmt: skip
            t5, _ = run_batch(home, "mlp", large, work / f"r-{len(rates)}-5", 2, args.batch_size,
                              args.part_rows, engine)  # fmt: skip
            rates[label] = 4 * n / (t5 - t1)
            print(f"  mlp {label:16s} {rates[label]:>8,.0f} rows/s ({t1:.1f} s for {n:,} rows, "
                  f"{t5:.1f} s for {5 * n:,})", flush=True)  # fmt: skip
    ours, theirs = rates["local, 2 workers"], rates["ray, 2 actors"]
    print(f"  ray / local in steady state: {theirs / ours:.2f}")


if __name__ == "__main__":
    main()
