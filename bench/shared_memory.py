"""A 4 MiB tensor through system shared memory against binary HTTP and gRPC, on one server.

    .venv/bin/python bench/shared_memory.py [--duration 5] [--rounds 3] [--mib 4]

The model is an ONNX ``Identity`` over one FP32 input (built here), so the tensor goes in and
comes back out and the transport is what differs. Clients are Triton's own (tritonclient HTTP
with binary data both ways, tritonclient gRPC with raw contents), one request at a time:

- ``http binary`` (the baseline) and ``grpc``: the tensor in the request and the response;
- ``http+shm`` and ``grpc+shm``: input and output in registered regions (the client writes the
  input region once; each request names the regions; the server reads the input into the model
  and writes the output back).

Printed per case: requests/s, the ratio over ``http binary`` in the same round (median over
rounds), and CPU per request: the server's (utime+stime of its process from /proc) and the
client's (this process), in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tritonclient.grpc as tgrpc  # noqa: E402
import tritonclient.http as thttp  # noqa: E402
import tritonclient.utils.shared_memory as shm  # noqa: E402
import yaml  # noqa: E402

from tests.server import ServerProcess, open_registry  # noqa: E402

CASES = ("http binary", "grpc", "http+shm", "grpc+shm")


@dataclass
class Run:
    rps: float
    server_ms: float
    client_ms: float


def identity_package(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    manifest = {
        "runtime": "onnx",
        "artifact": "model.onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}],
    }
    (folder / "pitstop.yaml").write_text(yaml.safe_dump(manifest))
    return folder


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(call: Callable[[], None], pid: int, duration: float) -> Run:
    call()  # warm
    count = 0
    server0, client0, start = cpu_seconds(pid), time.process_time(), time.perf_counter()
    while time.perf_counter() - start < duration:
        call()
        count += 1
    elapsed = time.perf_counter() - start
    server = cpu_seconds(pid) - server0
    client = time.process_time() - client0
    return Run(count / elapsed, 1000 * server / count, 1000 * client / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mib", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitstop-shm-"))
    home = work / "home"
    with open_registry(home) as registry:
        registry.push(identity_package(work / "id"), name="id", aliases=["production"],
                      actor="bench")  # fmt: skip
    columns = 1024
    tensor = np.random.default_rng(0).random(
        (args.mib * 1024 * 1024 // 4 // columns, columns), dtype=np.float32
    )
    size = tensor.nbytes
    tag = os.getpid()
    regions = {
        "in": shm.create_shared_memory_region("in", f"/pitstop_bench_in_{tag}", size),
        "out": shm.create_shared_memory_region("out", f"/pitstop_bench_out_{tag}", size),
    }
    shm.set_shared_memory_region(regions["in"], [tensor])
    runs: dict[str, list[Run]] = {case: [] for case in CASES}
    try:
        with ServerProcess(home, {"PITSTOP_LOG_LEVEL": "warning"}) as server:
            pid = server.process.pid
            http = thttp.InferenceServerClient(server.url.removeprefix("http://"))
            grpc = tgrpc.InferenceServerClient(server.grpc_target)
            for key, name in (
                (f"/pitstop_bench_in_{tag}", "in"),
                (f"/pitstop_bench_out_{tag}", "out"),
            ):
                http.register_system_shared_memory(name, key, size)
            calls = cases(http, grpc, tensor, size)
            check(calls, regions["out"], tensor)
            for _ in range(args.rounds):
                for case in CASES:
                    runs[case].append(measure(calls[case], pid, args.duration))
            http.unregister_system_shared_memory()
            http.close()
            grpc.close()
    finally:
        for handle in regions.values():
            shm.destroy_shared_memory_region(handle)
    print(f"tensor: {size / 2**20:.1f} MiB FP32 in and out, c1, {args.rounds} rounds")
    print(
        f"{'case':12} {'requests/s':>11} {'vs http':>8} {'server ms/req':>14} {'client ms/req':>14}"
    )
    for case in CASES:
        ratio = statistics.median(
            r.rps / b.rps for r, b in zip(runs[case], runs["http binary"], strict=True)
        )
        rps = statistics.median(r.rps for r in runs[case])
        server_ms = statistics.median(r.server_ms for r in runs[case])
        client_ms = statistics.median(r.client_ms for r in runs[case])
        print(f"{case:12} {rps:11.1f} {ratio:8.2f} {server_ms:14.2f} {client_ms:14.2f}")


def cases(http: Any, grpc: Any, tensor: np.ndarray, size: int) -> dict[str, Callable[[], None]]:
    def http_binary() -> None:
        x = thttp.InferInput("x", list(tensor.shape), "FP32")
        x.set_data_from_numpy(tensor, binary_data=True)
        result = http.infer("id", [x], outputs=[thttp.InferRequestedOutput("y", binary_data=True)])
        result.as_numpy("y")

    def grpc_raw() -> None:
        x = tgrpc.InferInput("x", list(tensor.shape), "FP32")
        x.set_data_from_numpy(tensor)
        grpc.infer("id", [x]).as_numpy("y")

    def with_shm(client: Any, module: Any) -> Callable[[], None]:
        def call() -> None:
            x = module.InferInput("x", list(tensor.shape), "FP32")
            x.set_shared_memory("in", size)
            y = module.InferRequestedOutput("y")
            y.set_shared_memory("out", size)
            client.infer("id", [x], outputs=[y])

        return call

    return {
        "http binary": http_binary,
        "grpc": grpc_raw,
        "http+shm": with_shm(http, thttp),
        "grpc+shm": with_shm(grpc, tgrpc),
    }


def check(calls: dict[str, Callable[[], None]], out: Any, tensor: np.ndarray) -> None:
    """Each shared-memory case really answers through the output region."""
    for case in ("http+shm", "grpc+shm"):
        shm.set_shared_memory_region(out, [np.zeros_like(tensor)])
        calls[case]()
        got = shm.get_contents_as_numpy(out, np.float32, list(tensor.shape))
        assert np.array_equal(got, tensor), case


if __name__ == "__main__":
    main()
