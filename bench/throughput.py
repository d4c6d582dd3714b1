"""Throughput benchmark: the physical limit, the framework ceiling, pitstop, and MLServer.

    .venv/bin/python bench/throughput.py [--duration 8] [--skip-mlserver]      (or: make bench)

Everything runs on this machine in one run, so the printed ratios compare like with like:
1. in-process model throughput at batch 1/8/32/128 (the physical limit);
2. a bare Starlette+uvicorn V2 echo app (the framework ceiling, bench/echo_app.py);
3. pitstop over HTTP JSON, HTTP binary and gRPC at concurrency 1/8/32/64;
4. MLServer 1.7.1 serving the same scikit-learn model, in its own venv (bench/.venv-mlserver),
   with and without adaptive batching ("debug": false, no parallel workers);
5. batching on a ~1 ms ONNX MLP at concurrency 64, on and off;
6. overload: concurrency far beyond a small queue, counting every status;
7. the headline ratios again, interleaved: the echo app, pitstop and both MLServer
   configurations all up at once and loaded in turn for ``--rounds`` rounds, reported as the
   median of per-round ratios, so a machine that slows down mid-run (shared cores) biases no side;
8. with ``--workers N``: the same, for pitstop with N workers, the echo app with N uvicorn
   workers and MLServer's configurations including its N parallel inference workers
   (bench/workers.py).
Load comes from wrk (HTTP) and h2load (gRPC), Debian packages `wrk` and `nghttp2-client`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from tests.server import ServerProcess, free_port, open_registry  # noqa: E402

LUA = ROOT / "bench" / "lua" / "post.lua"
MLSERVER_VENV = ROOT / "bench" / ".venv-mlserver"
MLSERVER_PACKAGES = [
    "mlserver==1.7.1",
    "mlserver-sklearn==1.7.1",
    "uvloop==0.21.0",
    "fastapi<0.116",
    "scikit-learn",
    "joblib",
]


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int] = field(default_factory=dict)

    def cell(self) -> str:
        return f"{self.rps:8.0f}/s p50 {self.p50_ms:6.2f} p99 {self.p99_ms:7.2f} ms"


def need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        sys.exit(f"{tool} not found: apt-get install -y {package}")
    return found


def wrk(
    url: str,
    body: Path,
    concurrency: int,
    duration: float,
    headers: str = "",
    content_type: str = "application/json",
) -> Load:
    threads = min(2, concurrency)
    env = {
        **os.environ,
        "BODY_FILE": str(body),
        "EXTRA_HEADER": headers,
        "CONTENT_TYPE": content_type,
    }
    out = subprocess.run(
        [
            need("wrk", "wrk"),
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{int(duration)}s",
            "-s",
            str(LUA),
            url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + 60,
        check=True,
    ).stdout
    values: dict[str, float] = {}
    statuses: dict[int, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "status":
            statuses[int(parts[1])] = int(parts[2])
        elif len(parts) == 2 and parts[0] in (
            "latency_p50_us",
            "latency_p99_us",
            "requests",
            "duration_us",
        ):
            values[parts[0]] = float(parts[1])
    return Load(
        values["requests"] / (values["duration_us"] / 1e6),
        values["latency_p50_us"] / 1000,
        values["latency_p99_us"] / 1000,
        statuses,
    )


def h2load(
    url: str, body: Path, concurrency: int, duration: float, headers: tuple[str, ...] = ()
) -> Load:
    """gRPC unary load: ``body`` is a length-prefixed gRPC message; ``headers``: extra
    ``name: value`` metadata. Percentiles come from h2load's per-request log. (gRPC errors
    travel in trailers with HTTP 200: the servers here are checked separately to answer these
    bodies.)"""
    extra = [arg for header in headers for arg in ("-H", header)]
    streams = max(1, concurrency // 4)
    clients = max(1, concurrency // streams)
    with tempfile.NamedTemporaryFile(suffix=".tsv") as log:
        out = subprocess.run(
            [need("h2load", "nghttp2-client"), "-D", str(int(duration)), "-c", str(clients),
             "-m", str(streams), "-t", "1", "-d", str(body), "-H", "content-type: application/grpc",
             "-H", "te: trailers", *extra, f"--log-file={log.name}", url],
            capture_output=True, text=True, timeout=duration + 60, check=True,
        ).stdout  # fmt: skip
        rows = [line.split("\t") for line in Path(log.name).read_text().splitlines() if line]
    latencies = sorted(int(row[2]) / 1000 for row in rows)
    statuses: dict[int, int] = {}
    for row in rows:
        statuses[int(row[1])] = statuses.get(int(row[1]), 0) + 1
    rps = 0.0
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return Load(rps, pick(0.50), pick(0.99), statuses)


# -- servers ---------------------------------------------------------------------------------


@contextmanager
def echo_server(workers: int = 1) -> Iterator[tuple[str, int]]:
    """The bare echo app (uvicorn's own ``--workers`` when more than one): (url, pid)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, str(ROOT / "bench" / "echo_app.py")),
            *("--port", str(port), "--workers", str(workers)),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/v2/models/m/infer", post=True)
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def pitstop_server(home: Path, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess(home, {"PITSTOP_LOG_LEVEL": "warning", **(env or {})})
    server.start(timeout=120)
    try:
        yield server
    finally:
        server.stop()


def mlserver_python() -> Path:
    python = MLSERVER_VENV / "bin" / "python"
    if not python.exists():
        print("creating bench/.venv-mlserver (MLServer 1.7.1) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *MLSERVER_PACKAGES], check=True)
    return python


@contextmanager
def mlserver(folder: Path, parallel_workers: int = 0) -> Iterator[tuple[str, int, int]]:
    """MLServer serving ``folder``: (HTTP url, gRPC port, pid). ``parallel_workers`` > 0 runs
    inference in that many processes behind MLServer's one HTTP/gRPC process."""
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "debug": False,
                "http_port": http,
                "grpc_port": grpc_port,
                "metrics_port": metrics,
                "host": "127.0.0.1",
                "parallel_workers": parallel_workers,
                "metrics_endpoint": None,
            }
        )
    )
    mlserver_bin = mlserver_python().parent / "mlserver"
    process = subprocess.Popen(
        [str(mlserver_bin), "start", str(folder)],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{http}/v2/models/tiny/ready", timeout=120)
        yield f"http://127.0.0.1:{http}", grpc_port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and every live descendant, plus their reaped
    children (Linux /proc): a supervisor's workers count, as do MLServer's inference workers."""
    stats: dict[int, list[str]] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stats[int(path.parent.name)] = path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
    tree, grew = {pid}, True
    while grew:
        found = {p for p, fields in stats.items() if int(fields[1]) in tree} - tree
        tree |= found
        grew = bool(found)
    ticks = sum(int(v) for p in tree if p in stats for v in stats[p][11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _wait(url: str, post: bool = False, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
    while time.monotonic() < deadline:
        try:
            response = httpx.post(url, json=body) if post else httpx.get(url)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


# -- bodies ----------------------------------------------------------------------------------


def json_body(folder: Path, name: str = "x") -> Path:
    row = models.rows(1)[0].round(4).tolist()
    path = folder / f"{name}.json"
    path.write_text(
        json.dumps(
            {
                "inputs": [
                    {"name": name, "shape": [1, models.FEATURES], "datatype": "FP32", "data": row}
                ]
            }
        )
    )
    return path


def binary_body(folder: Path) -> tuple[Path, str]:
    row = models.rows(1)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, models.FEATURES],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": row.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    path = folder / "binary.bin"
    path.write_bytes(header + row.astype("<f4").tobytes())
    return path, f"Inference-Header-Content-Length: {len(header)}"


def grpc_body(folder: Path, model: str) -> Path:
    from pitstop.transports.proto import inference_pb2 as pb

    row = models.rows(1)
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, models.FEATURES])
    tensor.contents.fp32_contents.extend(row[0].tolist())
    message = request.SerializeToString()
    path = folder / f"grpc-{model}.bin"
    path.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)
    return path


# -- the run ---------------------------------------------------------------------------------


def in_process(model: Any, session: Any) -> dict[str, dict[int, float]]:
    results: dict[str, dict[int, float]] = {"sklearn": {}, "onnx": {}}
    for batch in (1, 8, 32, 128):
        x = models.rows(batch)
        calls = (
            ("sklearn", lambda x=x: model.predict_proba(x)),
            ("onnx", lambda x=x: session.run(None, {"x": x})),
        )
        for name, call in calls:
            for _ in range(50):
                call()
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < 1.0:
                call()
                count += 1
            results[name][batch] = count * batch / (time.perf_counter() - started)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument(
        "--sections",
        default="echo,http,grpc,mlp,overload,mlserver,interleaved",
        help="Comma-separated subset of: echo, http, grpc, mlp, overload, mlserver, interleaved "
        "(section 8 runs with --workers).",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved section")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also run section 8: pitstop with this many workers (and the baselines alike)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="pitstop-bench-"))
    model = models.tiny_classifier()
    import onnxruntime

    onnx_dir = models.tiny_onnx_package(work / "pkg-onnx", model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(onnx_dir / "model.onnx"), options)
    limit = in_process(model, session)
    print("\n# 1. in-process (rows/s)")
    for name, by_batch in limit.items():
        print(f"  {name:8s} " + "  ".join(f"b{b}: {v:>10.0f}" for b, v in by_batch.items()))

    home = work / "home"
    batching = {"max_batch_size": 64, "max_queue_delay_microseconds": 0}
    mlp_batching = {"max_batch_size": 64, "max_queue_delay_microseconds": 2000}
    with open_registry(home) as registry:

        def push(folder: Path, name: str) -> None:
            registry.push(folder, name=name, aliases=["production"], actor="bench")

        push(models.tiny_sklearn_package(work / "p1", model), "tiny")
        push(models.tiny_sklearn_package(work / "p2", model, batching), "tiny-batched")
        push(onnx_dir, "tiny-onnx")
        push(models.tiny_onnx_package(work / "p3", model, batching), "tiny-onnx-batched")
        push(models.mlp_onnx_package(work / "p4"), "mlp")
        push(models.mlp_onnx_package(work / "p5", mlp_batching), "mlp-batched")
        push(
            models.tiny_onnx_package(work / "p6", model, {**batching, "max_queue_size": 64}),
            "overload",
        )
    body = json_body(work)
    binary, binary_header = binary_body(work)
    results: dict[str, dict[int, Load]] = {}

    def sweep(label: str, run: Any) -> None:
        results[label] = {}
        for concurrency in levels:
            results[label][concurrency] = run(concurrency)
            print(
                f"  {label:34s} c{concurrency:<3d} {results[label][concurrency].cell()}", flush=True
            )

    sections = set(args.sections.split(","))
    mlp: dict[str, Load] = {}
    overload: Load | None = None
    print("\n# 2-3. HTTP and gRPC (closed loop, wrk / h2load)")
    if "echo" in sections:
        with echo_server() as (echo, _pid):
            sweep(
                "echo app (framework ceiling)",
                lambda c: wrk(f"{echo}/v2/models/m/infer", body, c, args.duration),
            )
    with pitstop_server(home) as server:
        if "http" in sections:
            for name in ("tiny", "tiny-batched", "tiny-onnx", "tiny-onnx-batched"):
                sweep(
                    f"pitstop HTTP JSON {name}",
                    lambda c, n=name: wrk(
                        f"{server.url}/v2/models/{n}/infer", body, c, args.duration
                    ),
                )
            sweep(
                "pitstop HTTP binary tiny-onnx-batched",
                lambda c: wrk(
                    f"{server.url}/v2/models/tiny-onnx-batched/infer",
                    binary,
                    c,
                    args.duration,
                    binary_header,
                    "application/octet-stream",
                ),
            )
        if "grpc" in sections:
            url = f"http://127.0.0.1:{server.grpc_port}/inference.GRPCInferenceService/ModelInfer"
            for name in ("tiny-batched", "tiny-onnx-batched"):
                payload = grpc_body(work, name)
                sweep(f"pitstop gRPC {name}", lambda c, p=payload: h2load(url, p, c, args.duration))
        if "mlp" in sections:
            print("\n# 5. batching on a ~1 ms MLP, concurrency 64")
            for label, name in (("off", "mlp"), ("on", "mlp-batched")):
                mlp[label] = wrk(f"{server.url}/v2/models/{name}/infer", body, 64, args.duration)
                print(f"  {label:3s} {mlp[label].cell()}")
        if "overload" in sections:
            print("\n# 6. overload: 320 connections against a queue of 64")
            overload = wrk(f"{server.url}/v2/models/overload/infer", body, 320, args.duration)
            print(f"  {overload.cell()} statuses {overload.statuses}")
    ml: dict[str, dict[int, Load]] = {}
    if "mlserver" in sections and not args.skip_mlserver:
        print("\n# 4. MLServer 1.7.1, same model")
        payload = grpc_body(work, "tiny")
        for adaptive in (False, True):
            label = "adaptive batching" if adaptive else "no batching"
            folder = models.mlserver_model(work / f"mlserver-{adaptive}" / "tiny", model, adaptive)
            with mlserver(folder.parent) as (url, grpc_port, _pid):
                for transport in ("HTTP", "gRPC"):
                    key = f"MLServer {transport} {label}"
                    ml[key] = {}
                    for concurrency in levels:
                        if transport == "HTTP":
                            run = wrk(f"{url}/v2/models/tiny/infer", body, concurrency,
                                      args.duration)  # fmt: skip
                        else:
                            target = (f"http://127.0.0.1:{grpc_port}"
                                      "/inference.GRPCInferenceService/ModelInfer")  # fmt: skip
                            run = h2load(target, payload, concurrency, args.duration)
                        ml[key][concurrency] = run
                        print(f"  {key:34s} c{concurrency:<3d} {run.cell()}", flush=True)
    report(results, ml, limit, mlp, overload)
    if "interleaved" in sections:
        interleaved(work, model, home, body, args, with_mlserver=not args.skip_mlserver)
    if args.workers > 1:
        from bench import workers

        workers.run(work, model, home, body, args)


def interleaved(
    work: Path, model: Any, home: Path, body: Path, args: Any, with_mlserver: bool
) -> None:
    """Headline ratios from servers loaded in turn, round after round (see the docstring)."""
    print(f"\n# 7. interleaved: {args.rounds} rounds, each server loaded in turn")
    with ExitStack() as stack:
        echo, echo_pid = stack.enter_context(echo_server())
        server = stack.enter_context(pitstop_server(home))
        assert server.process is not None
        # (c64 url, c1 url, pid): pitstop's best configuration at each level.
        targets = {
            "echo": (f"{echo}/v2/models/m/infer", f"{echo}/v2/models/m/infer", echo_pid),
            "pitstop": (
                f"{server.url}/v2/models/tiny-onnx-batched/infer",
                f"{server.url}/v2/models/tiny-onnx/infer",
                server.process.pid,
            ),
        }
        if with_mlserver:
            for adaptive in (False, True):
                folder = work / f"mlserver-interleaved-{adaptive}" / "tiny"
                models.mlserver_model(folder, model, adaptive)
                url, _, pid = stack.enter_context(mlserver(folder.parent))
                label = "MLServer adaptive" if adaptive else "MLServer plain"
                targets[label] = (f"{url}/v2/models/tiny/infer",) * 2 + (pid,)
        for url64, url1, _pid in targets.values():  # warm every server up before round 1
            wrk(url64, body, 64, 2)
            wrk(url1, body, 1, 1)
        rounds: list[dict[str, tuple[Load, Load]]] = []
        cpu_us: dict[str, list[float]] = {label: [] for label in targets}
        for number in range(1, args.rounds + 1):
            measured = {}
            for label, (url64, url1, pid) in targets.items():
                before = cpu_seconds(pid)
                c64 = wrk(url64, body, 64, args.duration)
                cpu_us[label].append((cpu_seconds(pid) - before) / (c64.rps * args.duration) * 1e6)
                c1 = wrk(url1, body, 1, args.duration)
                measured[label] = (c64, c1)
                print(
                    f"  round {number} {label:18s} c64 {c64.cell()} "
                    f"({cpu_us[label][-1]:.0f} µs CPU/request)   c1 {c1.cell()}",
                    flush=True,
                )
            rounds.append(measured)

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    echo_ratio = median([r["pitstop"][0].rps / r["echo"][0].rps for r in rounds])
    print(f"  median pitstop / echo app at c64 (HTTP JSON): {echo_ratio:.2f}")
    costs = {label: median(values) for label, values in cpu_us.items()}
    print(
        "  median server CPU per request at c64 (process user+sys / requests): "
        + ", ".join(f"{label} {value:.0f} µs" for label, value in costs.items())
    )
    print(f"  echo app CPU per request / pitstop's: {costs['echo'] / costs['pitstop']:.2f}")
    if with_mlserver:
        ml = ("MLServer plain", "MLServer adaptive")
        throughput = median([r["pitstop"][0].rps / max(r[k][0].rps for k in ml) for r in rounds])
        latency = median([r["pitstop"][1].p50_ms / min(r[k][1].p50_ms for k in ml) for r in rounds])
        print(f"  median pitstop / MLServer's best at c64 (HTTP JSON): {throughput:.2f}")
        print(f"  median pitstop p50 / MLServer's best p50 at c1 (HTTP JSON): {latency:.2f}")


def report(
    results: dict[str, dict[int, Load]],
    ml: dict[str, dict[int, Load]],
    limit: dict[str, dict[int, float]],
    mlp: dict[str, Load],
    overload: Load | None,
) -> None:
    print("\n# Ratios (same run)")
    if results:
        c_max = max(max(by_c) for by_c in results.values())

        def best(prefix: str, concurrency: int = c_max, key: str = "rps") -> float | None:
            values = [
                getattr(by_c[concurrency], key)
                for label, by_c in {**results, **ml}.items()
                if label.startswith(prefix) and concurrency in by_c
            ]
            if not values:
                return None
            return max(values) if key == "rps" else min(values)

        pitstop_http = best("pitstop HTTP JSON")
        echo = best("echo app")
        grpc = best("pitstop gRPC")
        ml_http = best("MLServer HTTP")
        ml_grpc = best("MLServer gRPC")
        if pitstop_http and echo:
            print(f"  pitstop best HTTP JSON / echo app at c{c_max}: {pitstop_http / echo:.2f}")
        if pitstop_http and ml_http:
            print(f"  pitstop best HTTP JSON / MLServer best HTTP at c{c_max}: "
                  f"{pitstop_http / ml_http:.2f}")  # fmt: skip
        if grpc and ml_grpc:
            print(f"  pitstop best gRPC / MLServer best gRPC at c{c_max}: {grpc / ml_grpc:.2f}")
        ours_p50 = best("pitstop HTTP JSON", 1, "p50_ms")
        ml_p50 = best("MLServer HTTP", 1, "p50_ms")
        if ours_p50 and ml_p50:
            print(f"  pitstop p50 / MLServer p50 at c1 (HTTP JSON): {ours_p50 / ml_p50:.2f}")
        if pitstop_http:
            print(f"  in-process onnx b1 rows/s / pitstop best HTTP: "
                  f"{limit['onnx'][1] / pitstop_http:.1f}")  # fmt: skip
    if mlp:
        print(f"  MLP batching on / off at c64: {mlp['on'].rps / mlp['off'].rps:.2f} "
              f"(p99 {mlp['on'].p99_ms:.1f} ms on, {mlp['off'].p99_ms:.1f} ms off)")  # fmt: skip
    if overload is not None:
        others = sum(n for status, n in overload.statuses.items() if status not in (200, 429))
        print(f"  overload: statuses {overload.statuses}; other than 200/429: {others}; "
              f"p99 of all answers {overload.p99_ms:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
