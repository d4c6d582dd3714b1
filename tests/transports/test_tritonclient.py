"""Triton's own clients (tritonclient.http and tritonclient.grpc) against a real pitstop server.

Nobody here wrote these clients: they are the compatibility contract for users moving from
Triton or KServe.
"""

from __future__ import annotations

import gzip
import json
import queue
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry
from tests.transports.served import triton_client

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
PROTOCOLS = ["http", "grpc"]


def push(registry: Registry, folder: Path, name: str, *aliases: str, **trust: bool) -> None:
    registry.push(folder, name=name, aliases=aliases, actor="test", **trust)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("packages")
    with open_registry(home) as registry:
        mf.push_transport_models(registry, src, {"max_batch_size": 16})
        text = mf.make_identity_package(src / "text", {"s": "BYTES"})
        push(registry, text, "text", "production", trust_code=True)
    with ServerProcess(home) as process:
        yield process


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> Iterator[thttp.InferenceServerClient]:
    client = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> Iterator[tgrpc.InferenceServerClient]:
    client = tgrpc.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


@pytest.fixture(params=PROTOCOLS)
def client(
    request: pytest.FixtureRequest,
    http_client: thttp.InferenceServerClient,
    grpc_client: tgrpc.InferenceServerClient,
) -> Any:
    return http_client if request.param == "http" else grpc_client


def module_of(client: Any) -> Any:
    return thttp if isinstance(client, thttp.InferenceServerClient) else tgrpc


def iris_input(client: Any, binary: bool = True) -> Any:
    tensor = module_of(client).InferInput("input", list(ROWS.shape), "FP32")
    if module_of(client) is thttp:
        tensor.set_data_from_numpy(ROWS, binary_data=binary)
    else:
        tensor.set_data_from_numpy(ROWS)
    return tensor


def test_health(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("py", "2")
    assert not client.is_model_ready("nope")


def test_server_metadata(client: Any) -> None:
    metadata = client.get_server_metadata(**as_json(client))
    assert metadata["name"] == "pitstop"
    assert "binary_tensor_data" in metadata["extensions"]


def test_the_server_name_is_a_setting_for_clients_that_check_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_registry(home) as registry:
        push(registry, mf.make_onnx_package(tmp_path / "iris"), "iris", "production")
    with ServerProcess(home, {"PITSTOP_SERVER_NAME": "triton"}) as named:
        for made in (triton_client("http", named), triton_client("grpc", named)):
            assert made.get_server_metadata(**as_json(made))["name"] == "triton"
            made.close()


def as_json(client: Any) -> dict[str, bool]:
    return {"as_json": True} if module_of(client) is tgrpc else {}


def test_model_metadata(client: Any) -> None:
    metadata = client.get_model_metadata("iris", **as_json(client))
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["versions"] == ["1"]
    [tensor] = metadata["inputs"]
    assert tensor["name"] == "input"
    assert tensor["datatype"] == "FP32"
    assert [int(d) for d in tensor["shape"]] == [-1, 4]


def test_model_config(client: Any) -> None:
    config = client.get_model_config("iris", **as_json(client))
    config = config.get("config", config)  # gRPC wraps it in ModelConfigResponse
    assert config["name"] == "iris"
    assert int(config["max_batch_size"]) == 16
    [tensor] = config["input"]
    assert tensor["data_type"] == "TYPE_FP32"
    assert [int(d) for d in tensor["dims"]] == [4]
    plain = client.get_model_config("py", "2", **as_json(client))
    plain = plain.get("config", plain)
    assert int(plain.get("max_batch_size", 0)) == 0
    assert [int(d) for d in plain["input"][0]["dims"]] == [-1, 4]


def test_rest_config_route_by_version(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/v2/models/py/versions/staging/config")
    assert response.status_code == 200
    assert response.json()["backend"] == "python"
    assert httpx.get(f"{server.url}/v2/models/nope/config").status_code == 404


@pytest.mark.parametrize("binary", [True, False])
def test_infer(client: Any, binary: bool) -> None:
    result = client.infer("iris", [iris_input(client, binary)], request_id="abc")
    assert result.as_numpy("label").tolist() == [0, 2]
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    assert result.get_response(**as_json(client))["id"] == "abc"


def test_requested_outputs(client: Any) -> None:
    module = module_of(client)
    wanted = (
        [thttp.InferRequestedOutput("probabilities", binary_data=False)]
        if module is thttp
        else [tgrpc.InferRequestedOutput("probabilities")]
    )
    result = client.infer("iris", [iris_input(client)], outputs=wanted)
    assert result.as_numpy("label") is None
    assert result.as_numpy("probabilities").shape == (2, 3)


def test_binary_outputs_over_http(http_client: thttp.InferenceServerClient) -> None:
    wanted = [thttp.InferRequestedOutput("label", binary_data=True)]
    result = http_client.infer("iris", [iris_input(http_client)], outputs=wanted)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert result.as_numpy("label").tolist() == [0, 2]


def test_version_selection(client: Any) -> None:
    x = module_of(client).InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    assert client.infer("py", [x]).as_numpy("y").tolist() == [[2, 4, 6, 8]]
    assert client.infer("py", [x], model_version="2").as_numpy("y").tolist() == [[3, 6, 9, 12]]
    assert client.infer("py", [x], model_version="1").as_numpy("y").tolist() == [[2, 4, 6, 8]]


def test_bytes_inputs(client: Any) -> None:
    values = np.array([["héllo".encode(), b"", b"\x00\xff"]], dtype=np.object_)
    tensor = module_of(client).InferInput("s", [1, 3], "BYTES")
    tensor.set_data_from_numpy(values)
    result = client.infer("text", [tensor])
    assert result.as_numpy("s").tolist() == values.tolist()


def test_unknown_model_raises_with_tritons_wording(client: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nope", [iris_input(client)])
    assert caught.value.message().startswith("Request for unknown model: 'nope' is not found")
    assert "registered" in caught.value.message()  # and pitstop's explanation
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.message().startswith("Request for unknown model: 'nope' is not found")
    x = module_of(client).InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("py", [x], model_version="9")
    assert caught.value.message().startswith(
        "Request for unknown model: 'py' version 9 is not found"
    )
    assert "served versions: [1, 2]" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("py", [x], model_version="wrong_specification")
    assert caught.value.message().startswith(
        "failed to get model version from specified version string 'wrong_specification'"
    )
    assert "no alias 'wrong_specification'" in caught.value.message()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_responses(
    http_client: thttp.InferenceServerClient, algorithm: str
) -> None:
    rows = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    for binary in (True, False):
        x = thttp.InferInput("x", list(rows.shape), "FP32")
        x.set_data_from_numpy(rows, binary_data=binary)
        wanted = [thttp.InferRequestedOutput("y", binary_data=binary)]
        result = http_client.infer(
            "py",
            [x],
            outputs=wanted,
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        np.testing.assert_array_equal(result.as_numpy("y"), rows * 2)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_grpc_messages(grpc_client: tgrpc.InferenceServerClient, algorithm: str) -> None:
    rows = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    x = tgrpc.InferInput("x", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    result = grpc_client.infer("py", [x], compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("y"), rows * 2)


def test_compression_on_the_wire(server: ServerProcess) -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [500, 4], "data": [1.5] * 2000}]}
    ).encode()
    url = f"{server.url}/v2/models/py/infer"
    for coding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        headers = {"content-encoding": coding, "accept-encoding": coding}
        with httpx.stream("POST", url, content=packed, headers=headers, timeout=10) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-encoding"] == coding
            assert answer.headers["vary"] == "Accept-Encoding"
            wire = b"".join(answer.iter_raw())
        assert int(answer.headers["content-length"]) == len(wire)
        inflated = gzip.decompress(wire) if coding == "gzip" else zlib.decompress(wire)
        assert json.loads(inflated)["outputs"][0]["data"] == [3.0] * 2000
    plain = httpx.post(url, content=body, headers={"accept-encoding": "identity"}, timeout=10)
    assert "content-encoding" not in plain.headers
    small = httpx.get(f"{server.url}/v2/health/ready", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers  # not worth it under 1 KiB


def test_compressed_bodies_that_are_bad(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/py/infer"
    # 80 MiB of zeros, ~80 KB on the wire: past the 64 MiB limit once inflated.
    bomb = gzip.compress(bytes(80 * 1024 * 1024), compresslevel=9)
    answer = httpx.post(url, content=bomb, headers={"content-encoding": "gzip"}, timeout=30)
    assert answer.status_code == 413
    assert "once decompressed" in answer.json()["error"]
    answer = httpx.post(url, content=b"{}", headers={"content-encoding": "br"}, timeout=10)
    assert answer.status_code == 415
    assert "Content-Encoding 'br'" in answer.json()["error"]
    answer = httpx.post(url, content=b"nope", headers={"content-encoding": "gzip"}, timeout=10)
    assert answer.status_code == 400
    assert "not valid gzip data" in answer.json()["error"]
    cut = gzip.compress(b'{"inputs": []}')[:-6]
    answer = httpx.post(url, content=cut, headers={"content-encoding": "gzip"}, timeout=10)
    assert answer.status_code == 400
    assert "ends before its compressed stream" in answer.json()["error"]
    # Every route reads compressed bodies, not only inference (the repository index here).
    models = httpx.post(
        f"{server.url}/v2/repository/index",
        content=gzip.compress(b'{"ready": true}'),
        headers={"content-encoding": "gzip"},
        timeout=10,
    )
    assert models.status_code == 200
    assert {m["name"] for m in models.json()} >= {"iris", "py"}


def test_bad_input_raises_with_our_message(client: Any) -> None:
    tensor = module_of(client).InferInput("wrong", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [tensor])
    assert "'wrong'" in caught.value.message()


def test_stream_infer(grpc_client: tgrpc.InferenceServerClient) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for index in range(3):
            grpc_client.async_stream_infer(
                "iris", [iris_input(grpc_client)], request_id=f"s{index}"
            )
        grpc_client.async_stream_infer("nope", [iris_input(grpc_client)], request_id="bad")
        got = [results.get(timeout=10) for _ in range(4)]
    finally:
        grpc_client.stop_stream()
    answered = [result for result, error in got if error is None]
    assert [r.get_response().id for r in answered] == ["s0", "s1", "s2"]
    assert all(r.as_numpy("label").tolist() == [0, 2] for r in answered)
    errors = [error for _, error in got if error is not None]
    assert len(errors) == 1
    assert "'nope'" in errors[0].message()


def test_inference_statistics(client: Any) -> None:
    client.infer("iris", [iris_input(client)])
    stats = client.get_inference_statistics("iris", **as_json(client))["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("iris", "1")]
    assert int(stats[0]["inference_stats"]["success"]["count"]) >= 1


def test_repository_index_load_unload(server: ServerProcess, client: Any) -> None:
    index = client.get_model_repository_index(**as_json(client))
    models = index["models"] if isinstance(index, dict) else index
    assert {"iris", "spare"} <= {m["name"] for m in models}
    with pytest.raises(InferenceServerException) as caught:
        client.unload_model("spare")
    assert "token" in caught.value.message().lower() or "authorization" in (
        caught.value.message().lower()
    )
    token = (server.home / "admin.token").read_text().strip()
    headers = {"authorization": f"Bearer {token}"}  # gRPC metadata keys are lowercase
    client.unload_model("spare", headers=headers)
    assert not client.is_model_ready("spare")
    client.load_model("spare", headers=headers)
    assert client.is_model_ready("spare")
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("wrong_model_name", headers=headers)
    assert caught.value.message().startswith("failed to load 'wrong_model_name'")


def test_load_with_a_config_override_or_files_is_refused(
    server: ServerProcess, client: Any
) -> None:
    token = (server.home / "admin.token").read_text().strip()
    headers = {"authorization": f"Bearer {token}"}
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("spare", headers=headers, config='{"max_batch_size": 4}')
    assert "parameters.'config'" in caught.value.message()
    assert "push a new version" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.load_model(
            "spare", headers=headers, config="{}", files={"file:1/model.onnx": b"\x00"}
        )
    assert "parameters.'" in caught.value.message()
    assert client.is_model_ready("spare")  # still serving what it served
