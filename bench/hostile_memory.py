"""Memory one request costs the server, per body byte, for the encodings that cost the most.

    .venv/bin/python bench/hostile_memory.py --mib 8

One real ``pitstop serve`` on 127.0.0.1 (iris: ONNX FP32 [n, 4]; text: a BYTES identity
handler, which answers with its input, so the response's cost is counted too). For each case one
request of about ``--mib`` MiB; before it the peak-RSS counters of the server and of its codec
worker process are reset (``/proc/PID/clear_refs``), after it their peak above the resident size
before is read. The factor is that peak over the body size: what docs/hostile-input.md promises
as an upper bound (body limit times factor). Linux only; run as the server's user.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.proto import inference_pb2_grpc as pb_grpc
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry

MIB = 1024 * 1024


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(x for x in status if x.startswith(key + ":")).split()[1])


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def reset_peak(pid: int) -> int:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    return status_kib(pid, "VmRSS")


def json_body(name: str, datatype: str, shape: list[int], element: str, count: int) -> bytes:
    head = json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                                   "data": [0]}]}).encode()  # fmt: skip
    return head.replace(b"[0]", b"[" + b",".join([element.encode()] * count) + b"]")


def binary_body(name: str, datatype: str, shape: list[int], raw: bytes) -> tuple[bytes, str]:
    tensor = {"name": name, "shape": shape, "datatype": datatype,
              "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + raw, str(len(head))


def cases(size: int) -> dict[str, Callable[[ServerProcess], tuple[int, int]]]:
    """name → send(server) returning (status, body bytes)."""

    def rest(path: str, body: bytes, header: str | None = None) -> Callable[..., tuple[int, int]]:
        headers = {} if header is None else {"Inference-Header-Content-Length": header}

        def send(server: ServerProcess) -> tuple[int, int]:
            answer = httpx.post(server.url + path, content=body, headers=headers, timeout=300)
            return answer.status_code, len(body)

        return send

    def over_grpc(message: pb.ModelInferRequest) -> Callable[..., tuple[int, int]]:
        data = message.SerializeToString()

        def send(server: ServerProcess) -> tuple[int, int]:
            options = [("grpc.max_receive_message_length", 512 * MIB)]
            with grpc.insecure_channel(server.grpc_target, options=options) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                try:
                    stub.ModelInfer(message, timeout=300)
                    return 200, len(data)
                except grpc.RpcError as error:
                    return error.code().value[0], len(data)  # type: ignore[attr-defined]

        return send

    rows = size // 8  # "0," four times per row
    empties = size // 3  # '"",'
    raw_bytes = b"\0\0\0\0" * (size // 4)
    typed_bytes = pb.ModelInferRequest(model_name="text")
    tensor = typed_bytes.inputs.add(name="t", datatype="BYTES", shape=[1, size // 2])
    tensor.contents.bytes_contents.extend([b""] * (size // 2))
    raw_grpc = pb.ModelInferRequest(model_name="text", raw_input_contents=[raw_bytes])
    raw_grpc.inputs.add(name="t", datatype="BYTES", shape=[1, len(raw_bytes) // 4])
    typed_fp32 = pb.ModelInferRequest(model_name="iris")
    floats = typed_fp32.inputs.add(name="input", datatype="FP32", shape=[size // 16, 4])
    floats.contents.fp32_contents.extend([0.0] * (size // 16 * 4))
    return {
        "REST JSON FP32 '0,' (iris)": rest(
            "/v2/models/iris/infer", json_body("input", "FP32", [rows, 4], "0", rows * 4)
        ),
        "REST JSON BYTES '\"\",' (text)": rest(
            "/v2/models/text/infer", json_body("t", "BYTES", [1, empties], '""', empties)
        ),
        "REST binary BYTES, empty elements (text)": rest(
            "/v2/models/text/infer", *binary_body("t", "BYTES", [1, size // 4], raw_bytes)
        ),
        "REST binary FP32 (iris)": rest(
            "/v2/models/iris/infer", *binary_body("input", "FP32", [size // 16, 4], raw_bytes)
        ),
        "gRPC raw BYTES, empty elements (text)": over_grpc(raw_grpc),
        "gRPC typed bytes_contents, empty (text)": over_grpc(typed_bytes),
        "gRPC typed fp32_contents (iris)": over_grpc(typed_fp32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=8, help="body size per request")
    args = parser.parse_args()
    size = args.mib * MIB
    with tempfile.TemporaryDirectory() as root:
        home, src = Path(root) / "home", Path(root) / "src"
        with open_registry(home) as registry:
            registry.push(mf.make_onnx_package(src / "iris"), name="iris",
                          aliases=["production"], actor="bench")  # fmt: skip
            text = mf.make_identity_package(src / "text", {"t": "BYTES"})
            registry.push(text, name="text", aliases=["production"], actor="bench",
                          trust_code=True)  # fmt: skip
        env = {"PITSTOP_MAX_REQUEST_BYTES": str(4 * size),
               "PITSTOP_GRPC_MAX_MESSAGE_BYTES": str(16 * size)}  # fmt: skip
        with ServerProcess(home, env) as server:
            assert server.process is not None
            pid = server.process.pid
            print(f"{'case':44} {'status':>6} {'body MiB':>9} {'server +MiB':>12} "
                  f"{'worker +MiB':>12} {'factor':>7} {'s':>6}")  # fmt: skip
            for name, send in cases(size).items():
                time.sleep(0.5)
                before = {p: reset_peak(p) for p in [pid, *children(pid)]}
                started = time.monotonic()
                status, body = send(server)
                elapsed = time.monotonic() - started
                grown = {p: status_kib(p, "VmHWM") - kib for p, kib in before.items()}
                main_mib = grown.pop(pid) / 1024
                worker_mib = max(grown.values(), default=0) / 1024
                factor = main_mib * MIB / body
                print(f"{name:44} {status:>6} {body / MIB:>9.1f} {main_mib:>12.1f} "
                      f"{worker_mib:>12.1f} {factor:>7.1f} {elapsed:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
