"""Decoding and encoding V2 JSON bodies."""

from __future__ import annotations

import numpy as np
import pytest

from pitstop.errors import InvalidInput, Unsupported
from pitstop.protocol.json_codec import decode_request, encode_response
from pitstop.protocol.tensor import InferResponse


def one(datatype: str, shape: list[int], data: object) -> dict:
    return {"inputs": [{"name": "t", "datatype": datatype, "shape": shape, "data": data}]}


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("FP32", [1.5, 2], np.float32),
        ("FP64", [1.5, 2], np.float64),
        ("INT64", [1, -2], np.int64),
        ("INT8", [1, -2], np.int8),
        ("UINT16", [1, 2], np.uint16),
        ("BOOL", [True, False], np.bool_),
    ],
)
def test_numeric_datatypes_decode(datatype: str, data: list, dtype: type) -> None:
    request = decode_request(one(datatype, [2], data))
    array = request.inputs["t"]
    assert array.dtype == dtype
    assert array.tolist() == [dtype(v).item() for v in data]
    assert request.input_datatypes["t"] == datatype


def test_nested_data_is_flattened_row_major() -> None:
    array = decode_request(one("INT32", [2, 2], [[1, 2], [3, 4]])).inputs["t"]
    assert array.tolist() == [[1, 2], [3, 4]]


def test_bytes_are_utf8() -> None:
    array = decode_request(one("BYTES", [2], ["héllo", "x"])).inputs["t"]
    assert array.tolist() == ["héllo".encode(), b"x"]


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        ([], "JSON object"),
        ({"inputs": "x"}, "'inputs'"),
        (one("FP32", [2], [1.0]), "needs 2"),
        (one("INT64", [1], [1.5]), "integers"),
        (one("UINT8", [1], [300]), "do not fit"),
        (one("BOOL", [1], [1]), "true/false"),
        (one("BYTES", [1], [1]), "strings"),
        (one("FP16", [1], [1.0]), "binary"),
        (one("FP32", [1.5], [1.0]), "shape"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "inputs[0].name"),
        ({"inputs": [one("FP32", [1], [1])["inputs"][0]] * 2}, "duplicate"),
        ({"inputs": one("FP32", [1], [1])["inputs"], "outputs": [{}]}, "outputs[0].name"),
        ({"inputs": one("FP32", [1], [1])["inputs"], "parameters": []}, "'parameters'"),
    ],
)
def test_invalid_bodies_name_the_field(request_body: object, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment.replace("[", r"\[").replace(".", r"\.")):
        decode_request(request_body)


def test_bf16_is_unsupported() -> None:
    with pytest.raises(Unsupported):
        decode_request(one("BF16", [1], [1.0]))


def test_encode_response() -> None:
    response = InferResponse(
        model_name="m",
        model_version="3",
        id="abc",
        outputs={
            "p": np.array([[0.5, 0.5]], dtype=np.float32),
            "s": np.array([b"a", b"b"], dtype=object),
        },
    )
    assert encode_response(response) == {
        "model_name": "m",
        "model_version": "3",
        "id": "abc",
        "outputs": [
            {"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 0.5]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        ],
    }
