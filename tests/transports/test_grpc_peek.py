"""peek_infer reads what protobuf reads from a ModelInferRequest's top-level fields, and refuses
what protobuf refuses as framing, without parsing the tensors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitstop.errors import InvalidInput
from pitstop.transports import grpc_convert as convert
from pitstop.transports.proto import inference_pb2 as pb


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(
        model_name=draw(st.text(max_size=8)), model_version=draw(st.text(max_size=4)),
        id=draw(st.text(max_size=4)),
    )  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        tensor = message.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=4)))
    if draw(st.booleans()):
        message.raw_input_contents.append(draw(st.binary(max_size=16)))
    if draw(st.booleans()):
        message.parameters["timeout"].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    return message


@settings(max_examples=300, derandomize=True, database=None)
@given(message=requests())
def test_peek_agrees_with_protobuf(message: pb.ModelInferRequest) -> None:
    data = message.SerializeToString()
    parsed = pb.ModelInferRequest.FromString(data)
    assert convert.peek_infer(data) == (
        parsed.model_name, parsed.model_version, bool(parsed.raw_input_contents)
    )  # fmt: skip


def test_the_last_occurrence_of_a_field_wins_as_in_protobuf() -> None:
    data = (
        pb.ModelInferRequest(model_name="a").SerializeToString()
        + pb.ModelInferRequest(model_name="b", model_version="2").SerializeToString()
    )
    assert convert.peek_infer(data) == ("b", "2", False)


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05ab",  # model_name declares 5 bytes, has 2
        b"\x0a",  # a tag with no length
        b"\x0b",  # wire type 3 (groups): not in this message
        b"\x08" + b"\xff" * 11,  # a varint longer than 10 bytes
        b"\x0a\x02\xff\xfe",  # model_name is not UTF-8
    ],
)
def test_framing_that_protobuf_refuses_is_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="not a valid ModelInferRequest"):
        convert.peek_infer(data)
