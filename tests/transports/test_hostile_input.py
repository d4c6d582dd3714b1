"""Hostile and malformed requests, one regression test per defect a fuzzing run found, through a
real server on 127.0.0.1 (REST and gRPC). Each must get a 4xx (or INVALID_ARGUMENT / NOT_FOUND)
naming the field, quickly, without disturbing other clients or the server's memory."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.proto import inference_pb2_grpc as pb_grpc
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry, wait_for

IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
Stub = pb_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("packages")
    with open_registry(home) as registry:
        for model in ("iris", "probe"):  # probe: the valid requests of the stall guard
            registry.push(mf.make_onnx_package(src / model), name=model, aliases=["production"],
                          actor="test")  # fmt: skip
        text = mf.make_identity_package(src / "text", {"t": "BYTES"})
        registry.push(text, name="text", aliases=["production"], actor="test", trust_code=True)
        # Known, but never ready: a handler pushed without --trust-code fails to load.
        untrusted = mf.make_python_package(src / "untrusted")
        registry.push(untrusted, name="untrusted", aliases=["production"], actor="test")
    process = ServerProcess(home).start(wait_ready=False)  # never ready: untrusted FAILS
    try:
        with open_registry(home) as registry:
            assert wait_for(
                lambda: any(s.state == "FAILED" for s in registry.serving_states("untrusted")),
                timeout=30,
            )
        for model in ("iris", "probe", "text"):
            assert wait_for(
                lambda m=model: httpx.get(f"{process.url}/v2/models/{m}/ready").status_code == 200,
                timeout=30,
            )
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Stub(channel)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def rss_kib(server: ServerProcess) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def binary_body(inputs: list[dict[str, object]], tail: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + tail, {"Inference-Header-Content-Length": str(len(header))}


def bytes_input(shape: list[int], size: int) -> dict[str, object]:
    return {"name": "t", "shape": shape, "datatype": "BYTES",
            "parameters": {"binary_data_size": size}}  # fmt: skip


def grpc_error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def raw_bytes_request(model: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="t", datatype="BYTES", shape=shape)
    request.raw_input_contents.append(raw)
    return request


# -- 1. BYTES tensors: the declared count is checked against the data before allocating --------


@pytest.mark.parametrize("model", ["text", "no-such-model"])
@pytest.mark.parametrize("count", [2**30, 10**14])
def test_rest_bytes_shape_larger_than_its_data_is_refused_at_once(
    client: httpx.Client, server: ServerProcess, model: str, count: int
) -> None:
    before = rss_kib(server)
    content, headers = binary_body([bytes_input([count], 4)], b"\0\0\0\0")
    started = time.monotonic()
    response = client.post(f"/v2/models/{model}/infer", content=content, headers=headers)
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert "input 't'" in response.json()["error"]
    # Either the shape alone is too large, or the data cannot hold it: never an allocation.
    assert any(
        fragment in response.json()["error"]
        for fragment in (f"cannot hold {count} BYTES elements", "is too large")
    )
    assert elapsed < 1.0
    assert rss_kib(server) - before < 50_000


def test_grpc_bytes_shape_larger_than_its_data_is_refused_concurrently(
    stub: Stub, server: ServerProcess
) -> None:
    before = rss_kib(server)
    message = raw_bytes_request("text", [2**31], b"\0\0\0\0")
    assert message.ByteSize() < 40  # the 35-byte message that once got the server OOM-killed
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        errors = list(pool.map(lambda _: grpc_error(lambda: stub.ModelInfer(message)), range(8)))
    for error in errors:
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "input 't'" in (error.details() or "")
    assert rss_kib(server) - before < 50_000
    huge = raw_bytes_request("nope", [10**14], b"\0\0\0\0")
    assert grpc_error(lambda: stub.ModelInfer(huge)).code() is grpc.StatusCode.INVALID_ARGUMENT


def test_bytes_tensors_that_fit_their_data_still_decode(client: httpx.Client, stub: Stub) -> None:
    raw = b"".join(struct.pack("<I", len(w)) + w for w in (b"a", b"", b"\xffz"))
    content, headers = binary_body([bytes_input([1, 3], len(raw))], raw)
    headers["Content-Type"] = "application/octet-stream"
    response = client.post("/v2/models/text/infer", content=content, headers=headers)
    assert response.status_code == 501  # echoed non-UTF-8 bytes cannot travel back as JSON
    message = raw_bytes_request("text", [1, 3], raw)
    answer = stub.ModelInfer(message)
    assert answer.raw_output_contents[0] == raw


# -- 2. rank above what numpy (and we) allow ----------------------------------------------------


def test_rank_above_the_maximum_is_refused(client: httpx.Client, stub: Stub) -> None:
    shape = [1] * 65
    json_body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": [1]}]}
    response = client.post("/v2/models/iris/infer", json=json_body)
    assert response.status_code == 400
    assert "input 'input': shape has 65 dimensions; at most 32" in response.json()["error"]
    content, headers = binary_body([bytes_input(shape, 5)], b"\x01\0\0\0a")
    assert client.post("/v2/models/text/infer", content=content, headers=headers).status_code == 400
    message = raw_bytes_request("text", shape, b"\x01\0\0\0a")
    error = grpc_error(lambda: stub.ModelInfer(message))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "65 dimensions" in (error.details() or "")


# -- 3. dimensions whose product overflows ------------------------------------------------------


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [2**63 - 1, 0], [0, 2**40, 2**40]])
def test_dimensions_that_multiply_past_int64_are_refused(
    client: httpx.Client, stub: Stub, shape: list[int]
) -> None:
    json_body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": []}]}
    response = client.post("/v2/models/iris/infer", json=json_body)
    assert response.status_code == 400, response.text
    assert "too large" in response.json()["error"]
    message = pb.ModelInferRequest(model_name="iris")
    message.inputs.add(name="input", datatype="FP32", shape=shape)
    message.raw_input_contents.append(b"")
    error = grpc_error(lambda: stub.ModelInfer(message))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()


# -- 4. numbers are ASCII digits ----------------------------------------------------------------


ARABIC_INDIC_ONE = "\u0661"


@pytest.mark.parametrize(
    "value", ["²", ARABIC_INDIC_ONE, "1²", "1 2", "-1", "0x10", "99999999999999999999"]
)
def test_binary_header_length_must_be_ascii_digits(client: httpx.Client, value: str) -> None:
    response = client.post(
        "/v2/models/iris/infer",
        content=json.dumps(IRIS).encode(),
        headers={"Inference-Header-Content-Length": value.encode("utf-8")},
    )
    assert response.status_code == 400, response.text
    assert "Inference-Header-Content-Length" in response.json()["error"]


@pytest.mark.parametrize(
    "version", ["%C2%B9", "%D9%A1", "%EF%BC%91"]
)  # ¹, Arabic-Indic 1, fullwidth 1
@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", "/infer"), ("GET", ""), ("GET", "/ready"), ("GET", "/config"), ("GET", "/stats")],
)
def test_non_ascii_digit_versions_are_unknown_not_errors_or_version_1(
    client: httpx.Client, method: str, suffix: str, version: str
) -> None:
    response = client.request(
        method,
        f"/v2/models/iris/versions/{version}{suffix}",
        json=IRIS if method == "POST" else None,
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]
    # The same request with an ASCII 1 is served by version 1.
    assert (
        client.request(
            method, f"/v2/models/iris/versions/1{suffix}", json=IRIS if method == "POST" else None
        ).status_code
        == 200
    )


def test_grpc_non_ascii_versions_are_not_found(stub: Stub) -> None:
    for version in ("¹", ARABIC_INDIC_ONE):
        message = pb.ModelInferRequest(model_name="iris", model_version=version)
        message.inputs.add(name="input", datatype="FP32", shape=[1, 4])
        message.raw_input_contents.append(np.ones((1, 4), "<f4").tobytes())
        assert grpc_error(lambda m=message: stub.ModelInfer(m)).code() is grpc.StatusCode.NOT_FOUND
        for call in (
            lambda v=version: stub.ModelMetadata(pb.ModelMetadataRequest(name="iris", version=v)),
            lambda v=version: stub.ModelConfig(pb.ModelConfigRequest(name="iris", version=v)),
            lambda v=version: stub.ModelStatistics(
                pb.ModelStatisticsRequest(name="iris", version=v)
            ),
        ):
            assert grpc_error(call).code() is grpc.StatusCode.NOT_FOUND
        ready = stub.ModelReady(pb.ModelReadyRequest(name="iris", version=version))
        assert ready.ready is False


# -- 5. model readiness: unknown is 404, known but not ready is 503 ------------------------------


def test_model_ready_tells_unknown_from_not_ready(client: httpx.Client, stub: Stub) -> None:
    assert client.get("/v2/models/iris/ready").status_code == 200
    assert client.get("/v2/models/iris/versions/1/ready").status_code == 200
    for path in ("/v2/models/nope/ready", "/v2/models/iris/versions/7/ready",
                 "/v2/models/iris/versions/nosuchalias/ready"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]
    failed = client.get("/v2/models/untrusted/ready")
    assert failed.status_code == 503
    assert failed.json() == {"name": "untrusted", "ready": False}
    assert client.get("/v2/models/untrusted/versions/1/ready").status_code == 503
    # gRPC answers as Triton does: not ready, for unknown models too.
    assert stub.ModelReady(pb.ModelReadyRequest(name="nope")).ready is False
    assert stub.ModelReady(pb.ModelReadyRequest(name="untrusted")).ready is False
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready is True


# -- JSON nesting: bounded by the parser (1,024 levels), and never a recursion in the server ------


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [64, 900, 1023, 1025, 100_000])
def test_deeply_nested_json_is_a_clear_400_everywhere(
    client: httpx.Client, server: ServerProcess, depth: int
) -> None:
    admin = {"Authorization": f"Bearer {(server.home / 'admin.token').read_text().strip()}"}
    value = nested(depth)
    templates = {  # @ marks where the nested value goes
        "/v2/models/iris/infer": [
            "@",
            '{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": @}]}',
            '{"inputs": [@], "parameters": {"p": @}}',
            '{"id": @, "inputs": []}',
        ],
        "/v2/pitstop/models/iris/traffic": ['{"weights": @}', "@"],
        "/v1/embeddings": ['{"model": "iris", "input": @}'],
    }
    bodies = {path: [t.replace("@", value) for t in ts] for path, ts in templates.items()}
    for path, payloads in bodies.items():
        for payload in payloads:
            method = "PUT" if path.endswith("/traffic") else "POST"
            answer = client.request(method, path, content=payload, headers=admin)
            assert 400 <= answer.status_code < 500, (path, payload[:80], answer.text[:200])
            assert answer.json()["error"], (path, payload[:80])
            if depth > 1024 and path.startswith("/v2/models"):
                assert "depth limit exceeded" in answer.json()["error"]
    assert client.get("/v2/models/iris/ready").status_code == 200  # and it still serves


# -- a request head that never ends: refused at the head limit, memory bounded -------------------


@pytest.mark.parametrize("where", ["header value", "header name", "request line"])
def test_a_head_that_never_ends_is_431_and_costs_no_memory(
    server: ServerProcess, client: httpx.Client, where: str
) -> None:
    """httptools buffers an unfinished header (or URL) without bound: the server stops reading
    once the head passes PITSTOP_MAX_HEADER_BYTES."""
    start = {
        "header value": b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Long: ",
        "header name": b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-",
        "request line": b"GET /v2/",
    }[where]
    before = rss_kib(server)
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(start)
        chunk = b"a" * (1 << 20)
        with contextlib.suppress(OSError):  # the server closes the connection
            for _ in range(64):
                sock.sendall(chunk)
                sent += 1
        answer = b""
        with contextlib.suppress(OSError):
            while part := sock.recv(4096):
                answer += part
    assert sent < 64, "the server kept reading a head of 64 MiB"
    assert answer.startswith(b"HTTP/1.1 431"), answer[:80]
    assert b"request head" in answer
    assert rss_kib(server) - before < 32 * 1024
    assert client.get("/v2/models/iris/ready").status_code == 200


# -- every error body is JSON, router-level ones included ---------------------------------------


def test_router_level_errors_are_json(client: httpx.Client, server: ServerProcess) -> None:
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert "/no/such/route" in missing.json()["error"]
    trailing = client.get("/v2/models/iris/")
    assert trailing.status_code == 404
    assert trailing.json()["error"]
    wrong_method = client.get("/v2/repository/index")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert "POST" in wrong_method.json()["error"]
    assert client.delete("/v2/models/iris/infer").status_code == 405
    assert client.get("/v2/").json()["name"] == "pitstop"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GARBAGE / NOT-HTTP\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(content)["error"].startswith("invalid HTTP request")


def test_grpc_messages_that_do_not_parse_are_invalid_argument(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        for method in ("ModelInfer", "ModelMetadata", "ServerLive"):
            call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            error = grpc_error(lambda c=call: c(b"\xff\xff\xff\xff", timeout=5))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
            assert "not a valid" in (error.details() or "")


# -- nothing a client sends stalls the others ----------------------------------------------------


def json_rows(model_input: str, rows: int) -> bytes:
    data = np.random.default_rng(0).random((rows, 4)).round(3).reshape(-1).tolist()
    return json.dumps(
        {"inputs": [{"name": model_input, "shape": [rows, 4], "datatype": "FP32", "data": data}]}
    ).encode()


def nested_empty_lists(count: int) -> bytes:
    head = b'{"inputs":[{"name":"t","shape":[1],"datatype":"BYTES","data":['
    return head + b",".join([b"[]"] * count) + b"]}]}"


STALL_BOUND_S = {"8 MiB of nested empty lists": 0.5, "4 MiB of BYTES elements": 0.25}
"""The worst latency a valid request may see beside each hostile one, 0.1 s unless named here.
Parsing the nested lists on the event loop would stall it ~2 s (measured): 0.5 s still proves it
is not, while leaving room for the 8 MiB handed to the codec worker on 2 busy cores (a 0.1 s
bound failed once at 103 ms in a fresh-clone run). Decoding the BYTES elements on the loop would
stall it ~440 ms (220 ms per 2 MiB, measured); decoded in the codec thread beside the loop, a
valid request once waited 128 ms for 2 MiB in a fresh-clone run on 2 busy cores, hence 4 MiB
and 0.25 s, clear of both. The numbers case keeps 0.1 s: on the loop it would cost ~160 ms."""


def hostile_requests() -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """Requests that were slow, huge or crashing before: each must not hold up other clients."""
    huge, huge_headers = binary_body([bytes_input([2**30], 4)], b"\0\0\0\0")
    # 4 MiB of one-byte BYTES elements: a legitimate, CPU-heavy decode (off the event loop).
    elements = b"\x01\0\0\0a" * (4 * 1024 * 1024 // 5)
    heavy, heavy_headers = binary_body([bytes_input([1, len(elements) // 5], len(elements))],
                                       elements)  # fmt: skip
    return {
        "declared 2**30 BYTES": ("/v2/models/text/infer", huge, huge_headers),
        "4 MiB of BYTES elements": ("/v2/models/text/infer", heavy, heavy_headers),
        "8 MiB of nested empty lists": ("/v2/models/text/infer", nested_empty_lists(2**22), {}),
        "10 MB of JSON numbers": ("/v2/models/iris/infer", json_rows("input", 250_000), {}),
    }


@pytest.mark.parametrize("case", list(hostile_requests()))
def test_a_hostile_request_does_not_stall_a_valid_one(server: ServerProcess, case: str) -> None:
    path, content, headers = hostile_requests()[case]
    with (
        httpx.Client(base_url=server.url, timeout=60.0) as hostile,
        httpx.Client(base_url=server.url, timeout=10.0) as valid,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        assert valid.post("/v2/models/probe/infer", json=IRIS).status_code == 200  # warm
        pending = pool.submit(hostile.post, path, content=content, headers=headers)
        latencies = []
        while not pending.done() or len(latencies) < 5:
            started = time.monotonic()
            assert valid.post("/v2/models/probe/infer", json=IRIS).status_code == 200
            latencies.append(time.monotonic() - started)
            assert len(latencies) < 20_000, "the hostile request never finished"
        answered = pending.result()
    assert answered.status_code < 500, answered.text
    assert answered.headers["content-type"] in ("application/json", "application/octet-stream")
    worst = max(latencies)
    bound = STALL_BOUND_S.get(case, 0.1)
    assert worst < bound, f"{case}: a valid request took {worst * 1000:.0f} ms"


def test_large_typed_grpc_contents_do_not_stall_rest_clients(server: ServerProcess) -> None:
    """Typed contents convert element by element in C (protobuf, numpy), holding the GIL: parsing
    and converting 1.5 million BYTES elements must not hold up a REST client. The request goes to a
    model whose inputs it does not match, so only the decoding is timed, not the answer."""
    message = pb.ModelInferRequest(model_name="iris")
    tensor = message.inputs.add(name="t", datatype="BYTES", shape=[1, 1_500_000])
    tensor.contents.bytes_contents.extend([b"ab"] * 1_500_000)
    options = [("grpc.max_receive_message_length", 64 * 2**20)]
    with (
        grpc.insecure_channel(server.grpc_target, options=options) as channel,
        httpx.Client(base_url=server.url, timeout=10.0) as valid,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        assert valid.post("/v2/models/probe/infer", json=IRIS).status_code == 200
        pending = pool.submit(grpc_error, lambda: Stub(channel).ModelInfer(message, timeout=60))
        latencies = []
        while not pending.done() or len(latencies) < 5:
            started = time.monotonic()
            assert valid.post("/v2/models/probe/infer", json=IRIS).status_code == 200
            latencies.append(time.monotonic() - started)
        error = pending.result()
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert max(latencies) < 0.1, f"a valid request took {max(latencies) * 1000:.0f} ms"


@pytest.fixture(scope="module")
def small_decoder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose JSON decoding process may use 256 MiB."""
    home = tmp_path_factory.mktemp("small")
    src = tmp_path_factory.mktemp("small-packages")
    with open_registry(home) as registry:
        text = mf.make_identity_package(src / "text", {"t": "BYTES"})
        registry.push(text, name="text", aliases=["production"], actor="test", trust_code=True)
        registry.push(mf.make_onnx_package(src / "onnx"), name="iris", aliases=["production"],
                      actor="test")  # fmt: skip
    with ServerProcess(home, {"PITSTOP_DECODE_MEMORY_BYTES": str(256 * 2**20)}) as process:
        yield process


def test_json_that_needs_more_memory_than_allowed_is_413_and_costs_the_server_nothing(
    small_decoder: ServerProcess,
) -> None:
    with httpx.Client(base_url=small_decoder.url, timeout=60.0) as client:
        assert (
            client.post("/v2/models/iris/infer", content=json_rows("input", 50_000)).status_code
            == 200
        )
        before = rss_kib(small_decoder)
        for _ in range(2):  # and again, once the decoding process has been replaced
            response = client.post("/v2/models/text/infer", content=nested_empty_lists(6_000_000))
            assert response.status_code == 413, response.text
            assert "memory" in response.json()["error"]
        assert rss_kib(small_decoder) - before < 100_000
        ok = client.post("/v2/models/iris/infer", content=json_rows("input", 50_000))
        assert ok.status_code == 200
        assert len(ok.json()["outputs"][0]["data"]) == 50_000
