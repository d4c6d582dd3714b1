"""The HTTP binary tensor extension against a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests import model_factory as mf
from tests.server import ServerProcess, open_registry

HEADER = "Inference-Header-Content-Length"
A = np.array([[1.5, -2.0, 3.25]], dtype=np.float32)
B = np.array([[7, -8]], dtype=np.int32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("packages")
    with open_registry(home) as registry:
        pair = mf.make_identity_package(src / "pair", {"a": "FP32", "b": "INT32"})
        registry.push(pair, name="pair", aliases=("production",), actor="t", trust_code=True)
        text = mf.make_identity_package(src / "text", {"s": "BYTES"})
        registry.push(text, name="text", aliases=("production",), actor="t", trust_code=True)
    with ServerProcess(home, {"PITSTOP_MAX_REQUEST_BYTES": "100000"}) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if binary:
        entry["parameters"] = {"binary_data_size": array.nbytes}
    else:
        entry["data"] = array.reshape(-1).tolist()
    return entry


def post(
    client: httpx.Client, model: str, header: dict[str, Any], tail: bytes, length: str | None = None
) -> httpx.Response:
    head = json.dumps(header).encode()
    return client.post(
        f"/v2/models/{model}/infer",
        content=head + tail,
        headers={HEADER: str(len(head)) if length is None else length},
    )


def split(response: httpx.Response) -> tuple[dict[str, Any], bytes]:
    size = int(response.headers[HEADER])
    return json.loads(response.content[:size]), response.content[size:]


def test_server_metadata_advertises_the_extension(client: httpx.Client) -> None:
    extensions = client.get("/v2").json()["extensions"]
    assert "binary_tensor_data" in extensions
    assert "model_configuration" in extensions


def test_binary_inputs_are_read_in_json_order_and_answered_in_json(client: httpx.Client) -> None:
    header = {"inputs": [tensor("b", B, "INT32", True), tensor("a", A, "FP32", True)]}
    response = post(client, "pair", header, B.tobytes() + A.tobytes())
    assert response.status_code == 200, response.text
    assert HEADER not in response.headers
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["a"]["data"] == A.reshape(-1).tolist()
    assert outputs["b"]["data"] == B.reshape(-1).tolist()


def test_binary_and_json_inputs_mix(client: httpx.Client) -> None:
    header = {"inputs": [tensor("a", A, "FP32", False), tensor("b", B, "INT32", True)]}
    response = post(client, "pair", header, B.tobytes())
    assert response.status_code == 200, response.text
    assert {o["name"] for o in response.json()["outputs"]} == {"a", "b"}


def test_binary_data_output_makes_every_output_binary(client: httpx.Client) -> None:
    header = {
        "inputs": [tensor("a", A, "FP32", False), tensor("b", B, "INT32", False)],
        "parameters": {"binary_data_output": True},
    }
    response = post(client, "pair", header, b"")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    body, tail = split(response)
    sizes = [o["parameters"]["binary_data_size"] for o in body["outputs"]]
    assert all("data" not in o for o in body["outputs"])
    assert sizes == [A.nbytes, B.nbytes]
    np.testing.assert_array_equal(np.frombuffer(tail[: sizes[0]], "<f4").reshape(1, 3), A)
    np.testing.assert_array_equal(np.frombuffer(tail[sizes[0] :], "<i4").reshape(1, 2), B)


def test_an_output_can_opt_out_of_binary_data_output(client: httpx.Client) -> None:
    header = {
        "inputs": [tensor("a", A, "FP32", False), tensor("b", B, "INT32", False)],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
    }
    body, tail = split(post(client, "pair", header, b""))
    a, b = body["outputs"]
    assert a["data"] == A.reshape(-1).tolist()
    assert b["parameters"]["binary_data_size"] == len(tail) == B.nbytes


def test_only_requested_outputs_are_binary(client: httpx.Client) -> None:
    header = {
        "inputs": [tensor("a", A, "FP32", False), tensor("b", B, "INT32", False)],
        "outputs": [{"name": "b", "parameters": {"binary_data": True}}],
    }
    body, tail = split(post(client, "pair", header, b""))
    assert [o["name"] for o in body["outputs"]] == ["b"]
    assert tail == B.astype("<i4").tobytes()


def test_bytes_use_length_prefixes_both_ways(client: httpx.Client) -> None:
    items = [b"\xff\x00", b"", "héllo".encode()]
    raw = b"".join(struct.pack("<I", len(item)) + item for item in items)
    header = {
        "inputs": [
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [1, 3],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    body, tail = split(post(client, "text", header, raw))
    assert body["outputs"][0]["parameters"]["binary_data_size"] == len(raw)
    assert tail == raw


def test_non_utf8_bytes_as_json_output_are_refused_with_a_hint(client: httpx.Client) -> None:
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    header = {
        "inputs": [
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [1, 1],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    response = post(client, "text", header, raw)
    assert response.status_code == 501
    assert "binary" in response.json()["error"]


def test_nan_outputs_need_binary(client: httpx.Client) -> None:
    nan = np.array([[np.nan, 1.0, np.inf]], dtype=np.float32)
    header = {"inputs": [tensor("a", nan, "FP32", True), tensor("b", B, "INT32", False)]}
    refused = post(client, "pair", header, nan.tobytes())
    assert refused.status_code == 501
    assert "NaN" in refused.json()["error"]
    header["parameters"] = {"binary_data_output": True}
    _, tail = split(post(client, "pair", header, nan.tobytes()))
    np.testing.assert_array_equal(np.frombuffer(tail[: nan.nbytes], "<f4"), nan.reshape(-1))


@pytest.mark.parametrize(
    ("header", "tail", "length", "fragment"),
    [
        (
            {"inputs": [tensor("a", A, "FP32", True), tensor("b", B, "INT32", True)]},
            A.tobytes() + B.tobytes(),
            "abc",
            "Inference-Header-Content-Length must be a non-negative integer",
        ),
        (
            {"inputs": [tensor("a", A, "FP32", True), tensor("b", B, "INT32", True)]},
            A.tobytes() + B.tobytes(),
            "999999",
            "but the body has only",
        ),
        (
            {"inputs": [tensor("a", A, "FP32", True), tensor("b", B, "INT32", True)]},
            A.tobytes(),
            None,
            "input 'b': binary_data_size 8 runs past the end of the body",
        ),
        (
            {"inputs": [tensor("a", A, "FP32", True), tensor("b", B, "INT32", True)]},
            A.tobytes() + B.tobytes() + b"junk",
            None,
            "4 bytes after the JSON header belong to no input",
        ),
        (
            {"inputs": [tensor("a", A, "FP32", True) | {"data": [1, 2, 3]}]},
            A.tobytes(),
            None,
            "both 'data' and binary_data_size",
        ),
        (
            {
                "inputs": [
                    tensor("a", A, "FP32", False),
                    {
                        "name": "b",
                        "datatype": "INT32",
                        "shape": [1, 2],
                        "parameters": {"binary_data_size": -1},
                    },
                ]
            },
            b"",
            None,
            "binary_data_size must be a non-negative integer",
        ),
        (
            {
                "inputs": [
                    tensor("a", A, "FP32", False),
                    {
                        "name": "b",
                        "datatype": "INT32",
                        "shape": [1, 2],
                        "parameters": {"binary_data_size": 6},
                    },
                ]
            },
            b"\x00" * 6,
            None,
            "6 bytes of INT32 data, but shape [1, 2] needs 8",
        ),
    ],
)
def test_malformed_binary_requests_are_400_naming_the_problem(
    client: httpx.Client,
    header: dict[str, Any],
    tail: bytes,
    length: str | None,
    fragment: str,
) -> None:
    response = post(client, "pair", header, tail, length)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_json_part_that_is_not_json_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/v2/models/pair/infer", content=b"{nope" + A.tobytes(), headers={HEADER: "5"}
    )
    assert response.status_code == 400
    assert "JSON part of the body is not valid JSON" in response.json()["error"]


def test_binary_data_size_without_the_header_is_400(client: httpx.Client) -> None:
    header = {"inputs": [tensor("a", A, "FP32", True), tensor("b", B, "INT32", False)]}
    response = client.post("/v2/models/pair/infer", content=json.dumps(header).encode())
    assert response.status_code == 400
    assert HEADER in response.json()["error"]


def test_malformed_bytes_elements_are_400(client: httpx.Client) -> None:
    raw = struct.pack("<I", 10) + b"short"
    header = {
        "inputs": [
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [1, 1],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    response = post(client, "text", header, raw)
    assert response.status_code == 400
    assert "declares 10 bytes but only 5 remain" in response.json()["error"]


def test_binary_body_over_the_limit_is_413(client: httpx.Client) -> None:
    big = np.zeros((1, 30000), dtype=np.float32)
    header = {"inputs": [tensor("a", big, "FP32", True), tensor("b", B, "INT32", False)]}
    response = post(client, "pair", header, big.tobytes())
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
