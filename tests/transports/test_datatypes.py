"""Every datatype round-trips through an identity model on REST JSON, REST binary, gRPC typed
contents and gRPC raw contents, against a real server process."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest

from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.proto import inference_pb2_grpc as pb_grpc
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry

BYTES_VALUES = [b"caf\xc3\xa9", b"", b"\x00\xff binary", b"x" * 300]
"""Includes bytes that are not UTF-8: they can only travel in binary/raw form."""

VALUES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([[0, 255], [1, 128]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535], [1, 300]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1], [1, 70000]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1], [1, 2**40]], dtype=np.uint64),
    "INT8": np.array([[-128, 127], [0, -1]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 2**15 - 1], [0, -1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1], [0, -1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1], [0, -1]], dtype=np.int64),
    "FP16": np.array([[65504.0, -1.5], [6.1e-5, 0.0]], dtype=np.float16),
    "FP32": np.array([[3.4e38, -1.25], [1e-45, 0.1]], dtype=np.float32),
    "FP64": np.array([[1.7e308, -1.25], [5e-324, 0.1]], dtype=np.float64),
    "BYTES": np.array(BYTES_VALUES, dtype=object).reshape(2, 2),
}
JSON_BYTES = np.array([b"caf\xc3\xa9", b"", b"plain", b"x y"], dtype=object).reshape(2, 2)


def model_of(datatype: str) -> str:
    return f"id-{datatype.lower()}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("packages")
    with open_registry(home) as registry:
        for datatype in VALUES:
            folder = mf.make_identity_package(src / datatype, {"x": datatype})
            registry.push(
                folder, name=model_of(datatype), aliases=("production",), actor="t", trust_code=True
            )
    with ServerProcess(home) as process:
        yield process


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    if want.dtype == object:
        assert got.reshape(-1).tolist() == want.reshape(-1).tolist()
    else:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def raw_bytes(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(item)) + item for item in array.reshape(-1))
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def from_raw(datatype: str, raw: bytes, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            (length,) = struct.unpack_from("<I", raw, offset)
            items.append(raw[offset + 4 : offset + 4 + length])
            offset += 4 + length
        return np.array(items, dtype=object).reshape(shape)
    dtype = VALUES[datatype].dtype
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


JSON_DATATYPES = [d for d in VALUES if d != "FP16"]


@pytest.mark.parametrize("datatype", JSON_DATATYPES)
def test_rest_json(server: ServerProcess, datatype: str) -> None:
    want = JSON_BYTES if datatype == "BYTES" else VALUES[datatype]
    data = (
        [item.decode() for item in want.reshape(-1)]
        if datatype == "BYTES"
        else want.reshape(-1).tolist()
    )
    body = {"inputs": [{"name": "x", "datatype": datatype, "shape": [2, 2], "data": data}]}
    response = httpx.post(f"{server.url}/v2/models/{model_of(datatype)}/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["datatype"] == datatype
    assert output["shape"] == [2, 2]
    if datatype == "BYTES":
        assert output["data"] == data
    else:
        assert_same(np.array(output["data"], dtype=want.dtype).reshape(2, 2), want)


def test_rest_json_refuses_fp16_naming_binary(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP16", "shape": [1, 1], "data": [1.0]}]}
    response = httpx.post(f"{server.url}/v2/models/id-fp16/infer", json=body)
    assert response.status_code == 400
    assert "binary" in response.json()["error"]


@pytest.mark.parametrize("datatype", list(VALUES))
def test_rest_binary(server: ServerProcess, datatype: str) -> None:
    want = VALUES[datatype]
    raw = raw_bytes(want)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "x", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = httpx.post(
        f"{server.url}/v2/models/{model_of(datatype)}/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    size = int(response.headers["Inference-Header-Content-Length"])
    [output] = json.loads(response.content[:size])["outputs"]
    assert output["datatype"] == datatype
    assert output["parameters"]["binary_data_size"] == len(response.content) - size
    assert_same(from_raw(datatype, response.content[size:], output["shape"]), want)


TYPED_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@pytest.mark.parametrize("datatype", list(TYPED_FIELD))
def test_grpc_typed_contents(stub: pb_grpc.GRPCInferenceServiceStub, datatype: str) -> None:
    """Typed inputs are answered raw, as Triton answers (clients that read only
    raw_output_contents get the values); typed outputs when the request asks for them."""
    want = VALUES[datatype]
    request = pb.ModelInferRequest(model_name=model_of(datatype))
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[2, 2])
    getattr(tensor.contents, TYPED_FIELD[datatype]).extend(want.reshape(-1).tolist())
    response = stub.ModelInfer(request, timeout=10)
    [output] = response.outputs
    [raw] = response.raw_output_contents
    assert not _has_typed(output)
    assert_same(from_raw(datatype, raw, list(output.shape)), want)

    request.parameters["typed_output_contents"].bool_param = True
    response = stub.ModelInfer(request, timeout=10)
    assert not response.raw_output_contents  # asked for typed
    [output] = response.outputs
    assert output.datatype == datatype
    values = list(getattr(output.contents, TYPED_FIELD[datatype]))
    got = (
        np.array(values, dtype=object)
        if datatype == "BYTES"
        else np.array(values, dtype=want.dtype)
    )
    assert_same(got.reshape(list(output.shape)), want)


def _has_typed(output: pb.ModelInferResponse.InferOutputTensor) -> bool:
    return any(len(getattr(output.contents, field)) for field in set(TYPED_FIELD.values()))


def test_grpc_typed_outputs_parameter_must_be_a_bool(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    request = pb.ModelInferRequest(model_name=model_of("FP32"))
    request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    request.raw_input_contents.append(raw_bytes(VALUES["FP32"]))
    request.parameters["typed_output_contents"].string_param = "yes"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters.typed_output_contents must be a bool" in caught.value.details()


def test_grpc_mixing_raw_and_typed_inputs_names_the_input(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    request = pb.ModelInferRequest(model_name=model_of("FP32"))
    request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    request.inputs.add(name="z", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    request.raw_input_contents.append(raw_bytes(VALUES["FP32"]))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "contents field must not be specified when using raw_input_contents for 'z' for model"
        in caught.value.details()
    )


def test_grpc_typed_fp16_is_refused(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(model_name="id-fp16")
    request.inputs.add(name="x", datatype="FP16", shape=[1, 1]).contents.fp32_contents.append(1)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents" in caught.value.details()


@pytest.mark.parametrize("datatype", list(VALUES))
def test_grpc_raw_contents(stub: pb_grpc.GRPCInferenceServiceStub, datatype: str) -> None:
    want = VALUES[datatype]
    request = pb.ModelInferRequest(model_name=model_of(datatype))
    request.inputs.add(name="x", datatype=datatype, shape=[2, 2])
    request.raw_input_contents.append(raw_bytes(want))
    response = stub.ModelInfer(request, timeout=10)
    [output] = response.outputs
    assert output.datatype == datatype
    [raw] = response.raw_output_contents
    assert_same(from_raw(datatype, raw, list(output.shape)), want)


@pytest.mark.parametrize("transport", ["json", "binary", "grpc"])
def test_bf16_is_refused_clearly(
    server: ServerProcess, stub: pb_grpc.GRPCInferenceServiceStub, transport: str
) -> None:
    if transport == "grpc":
        request = pb.ModelInferRequest(model_name="id-fp16")
        request.inputs.add(name="x", datatype="BF16", shape=[1, 1])
        request.raw_input_contents.append(b"\x00\x00")
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "BF16" in caught.value.details()
        return
    url = f"{server.url}/v2/models/id-fp16/infer"
    tensor = {"name": "x", "datatype": "BF16", "shape": [1, 1]}
    if transport == "json":
        response = httpx.post(url, json={"inputs": [tensor | {"data": [1.0]}]})
    else:
        header = json.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": 2}}]}).encode()
        response = httpx.post(
            url,
            content=header + b"\x00\x00",
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert response.status_code == 501
    assert "BF16" in response.json()["error"]
