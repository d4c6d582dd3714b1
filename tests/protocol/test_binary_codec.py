"""The HTTP binary tensor extension and the raw tensor layout, as pure functions."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from pitstop.errors import InvalidInput, Unsupported
from pitstop.protocol.binary_codec import decode_body, encode_body
from pitstop.protocol.raw_tensor import decode_raw, encode_raw
from pitstop.protocol.tensor import InferResponse


@pytest.mark.parametrize(
    "array",
    [
        np.array([[True, False, True]]),
        np.array([1, -2, 3], dtype=np.int16),
        np.array([2**64 - 1, 0], dtype=np.uint64),
        np.array([[1.5, -0.0]], dtype=np.float16),
        np.array([1e300], dtype=np.float64),
        np.array([b"a", b"", b"\xff"], dtype=object),
    ],
)
def test_raw_round_trip(array: np.ndarray) -> None:
    datatype = {"b": "BOOL", "i": "INT16", "u": "UINT64", "O": "BYTES"}.get(array.dtype.kind)
    datatype = datatype or {2: "FP16", 8: "FP64"}[array.dtype.itemsize]
    back = decode_raw(datatype, array.shape, encode_raw(array), "input 't'")
    assert back.tolist() == array.tolist()
    assert back.flags.writeable


def test_raw_is_little_endian_with_length_prefixes() -> None:
    assert encode_raw(np.array([1, 256], dtype=np.int32)) == b"\x01\0\0\0\0\x01\0\0"
    assert encode_raw(np.array(["hé"], dtype=object)) == struct.pack("<I", 3) + "hé".encode()
    assert encode_raw(np.array([True, False])) == b"\x01\x00"


def test_any_nonzero_byte_is_true() -> None:
    assert decode_raw("BOOL", (3,), b"\x00\x02\xff", "t").tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "fragment"),
    [
        ("INT32", (2,), b"\x00" * 7, "7 bytes of INT32 data, but shape [2] needs 8"),
        ("BYTES", (2,), struct.pack("<I", 1) + b"a\0\0\0", "ends after 1 of 2 elements"),
        ("BYTES", (1,), struct.pack("<I", 1) + b"ab", "1 bytes left over"),
        ("BYTES", (1,), b"\x01\x00", "2 bytes cannot hold 1 BYTES elements"),
        ("BYTES", (2**31,), b"\0" * 4, "4 bytes cannot hold 2147483648 BYTES elements"),
    ],
)
def test_raw_mismatches_name_the_problem(
    datatype: str, shape: tuple[int, ...], raw: bytes, fragment: str
) -> None:
    with pytest.raises(InvalidInput, match="input 't'") as caught:
        decode_raw(datatype, shape, raw, "input 't'")
    assert fragment in str(caught.value)


def test_bf16_is_unsupported() -> None:
    with pytest.raises(Unsupported, match="BF16"):
        decode_raw("BF16", (1,), b"\x00\x00", "input 't'")


def body(inputs: list[dict], tail: bytes = b"", **extra: object) -> tuple[bytes, str]:
    head = json.dumps({"inputs": inputs, **extra}).encode()
    return head + tail, str(len(head))


def test_decode_mixes_binary_and_json_inputs() -> None:
    raw = np.array([1.0, 2.0], dtype="<f4").tobytes()
    data, length = body(
        [
            {"name": "a", "datatype": "INT8", "shape": [1], "data": [3]},
            {
                "name": "b",
                "datatype": "FP32",
                "shape": [2],
                "parameters": {"binary_data_size": 8},
            },
        ],
        raw,
        id="r",
    )
    request = decode_body(data, length)
    assert request.id == "r"
    assert request.inputs["a"].tolist() == [3]
    assert request.inputs["b"].tolist() == [1.0, 2.0]


def test_plain_json_body_without_header() -> None:
    data, _ = body([{"name": "a", "datatype": "INT8", "shape": [1], "data": [3]}])
    assert decode_body(data, None).inputs["a"].tolist() == [3]


def response(**outputs: np.ndarray) -> InferResponse:
    return InferResponse("m", "1", outputs, output_parameters={})


def test_encode_is_plain_json_unless_binary_is_asked_for() -> None:
    encoded = encode_body(response(y=np.array([1, 2], dtype=np.int32)), {})
    assert encoded.json_length is None
    assert encoded.media_type == "application/json"
    assert json.loads(encoded.content)["outputs"][0]["data"] == [1, 2]


def test_encode_binary_output_appends_bytes_after_the_json() -> None:
    encoded = encode_body(
        response(y=np.array([1, 2], dtype=np.int32), z=np.array([0.5])),
        {"binary_data_output": True},
    )
    assert encoded.json_length is not None
    head = json.loads(encoded.content[: encoded.json_length])
    assert [o["parameters"]["binary_data_size"] for o in head["outputs"]] == [8, 8]
    assert encoded.content[encoded.json_length :] == (
        np.array([1, 2], "<i4").tobytes() + np.array([0.5], "<f8").tobytes()
    )


def test_nan_in_json_output_names_the_remedy() -> None:
    with pytest.raises(Unsupported, match="binary_data"):
        encode_body(response(y=np.array([np.nan])), {})
