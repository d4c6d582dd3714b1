"""Message formats: what parses as a V2 request or a record, which messages share a model call,
records mapped to inputs with failing rows kept apart, answers and dead letters."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from pitstop.errors import InvalidInput
from pitstop.protocol.tensor import TensorSpec
from pitstop.stream.broker import Delivery
from pitstop.stream.message import (
    Answerer,
    Kind,
    answer,
    dead_letter,
    group_key,
    parse,
    record_inputs,
)

X = TensorSpec("x", "FP32", (-1, 3))


def delivery(body: Any, headers: dict[str, str] | None = None, key: str = "S:1") -> Delivery:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Delivery(key, data, headers or {}, 1, 0, None)


def v2(rows: int = 1, name: str = "x", datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    tensor = {"name": name, "datatype": datatype, "shape": [rows, 3], "data": [1.0] * 3 * rows}
    return {"inputs": [tensor], **extra}


@pytest.mark.parametrize(
    ("body", "fmt", "kind"),
    [
        (v2(), "auto", Kind.V2),
        ({"a": 1, "b": [1, 2]}, "auto", Kind.RECORD),
        ({"inputs": "not a list", "b": 1}, "auto", Kind.RECORD),
        ({"a": 1}, "record", Kind.RECORD),
        (v2(), "record", Kind.RECORD),  # forced: a record with a field named inputs
    ],
)
def test_formats(body: Any, fmt: str, kind: Kind) -> None:
    assert parse(delivery(body), fmt, 1 << 20).kind is kind


@pytest.mark.parametrize(
    ("body", "fmt", "says"),
    [
        (b"\xff", "auto", "not JSON"),
        (b"[1, 2]", "auto", "JSON list, not an object"),
        ({"a": {"nested": 1}}, "auto", "field 'a'"),
        ({"a": 1}, "v2", "'inputs' must be a non-empty list"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1]}]}, "auto",
         "input 'x': data has 1 elements"),
        (b"{" + b" " * 100 + b"}", "auto", "more than max_message_bytes (50)"),
    ],
)  # fmt: skip
def test_bad_messages_say_what_is_wrong(body: Any, fmt: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(delivery(body), fmt, 50 if says.startswith("more") else 1 << 20)
    assert says in str(caught.value)


def key(body: Any, headers: dict[str, str] | None = None, sticky: str | None = None) -> Any:
    return group_key(parse(delivery(body, headers), "auto", 1 << 20), sticky)


def test_which_messages_share_a_model_call() -> None:
    assert key(v2(1)) == key(v2(5))  # rows may differ
    assert key(v2(1)) != key(v2(1, name="z"))
    assert key(v2(1)) != key(v2(1, datatype="FP64"))
    assert key(v2(1)) != key(v2(1, parameters={"p": 1}))
    assert key(v2(1)) != key(v2(1, outputs=[{"name": "y"}]))
    assert key({"a": 1, "b": 2}) == key({"a": 5, "b": 6})
    assert key({"a": 1, "b": 2}) != key({"b": 2, "a": 1})  # field order maps columns
    # the policy's sticky header (lower-cased) keeps one key on one arm, whatever its case
    one = key(v2(1), {"X-User": "u1"}, sticky="x-user")
    assert one == key(v2(1), {"x-user": "u1"}, sticky="x-user")
    assert one != key(v2(1), {"X-User": "u2"}, sticky="x-user")


def test_records_convert_together_and_failing_rows_stay_apart() -> None:
    records = [
        {"a": 1, "b": 2.5, "c": 3},
        {"a": "oops", "b": 1, "c": 1},
        {"a": None, "b": 1, "c": 1},
        {"a": 1, "b": 1, "c": 1},
    ]
    inputs, ok, errors = record_inputs(records, [X], {}, [])
    assert ok.tolist() == [True, False, False, True]
    assert sorted(errors) == [1, 2]
    assert "'oops'" in errors[1]
    assert "empty" in errors[2]
    np.testing.assert_array_equal(inputs["x"], [[1, 2.5, 3], [1, 1, 1]])
    mapped, ok, _ = record_inputs([{"id": 7, "v": [1, 2, 3]}], [X], {"x": ["v"]}, ["id"])
    assert ok.all()
    np.testing.assert_array_equal(mapped["x"], [[1, 2, 3]])
    with pytest.raises(InvalidInput, match="no column"):
        record_inputs([{"a": 1}], [X], {}, [])


BY = Answerer("fraud", 3, "sha256:" + "0" * 64)


def test_a_record_answer_keeps_fields_and_names_the_version() -> None:
    message = parse(delivery({"id": "t-9", "a": 1, "b": 2, "c": 3}, {"trace": "abc"}), "auto", 99)
    outputs = {
        "label": np.array([1]),
        "probabilities": np.array([[0.25, 0.75]], dtype=np.float32),
        "text": np.array([b"caf\xc3\xa9"], dtype=object),
    }
    body, headers = answer(message, outputs, BY, {}, ["id"])
    assert orjson.loads(body) == {
        "message_id": "S:1", "model_name": "fraud", "model_version": "3",
        "model_digest": BY.digest, "id": "t-9",
        "outputs": {"label": 1, "probabilities": [0.25, 0.75], "text": "café"},
    }  # fmt: skip
    assert headers["trace"] == "abc"
    assert headers["Pitstop-Model-Version"] == "3"


def test_a_v2_answer_is_a_v2_response() -> None:
    message = parse(delivery(v2(2, id="req-1")), "auto", 1 << 20)
    body, _headers = answer(message, {"y": np.array([1.5, 2.5])}, BY, {"tokens": 4}, [])
    assert orjson.loads(body) == {
        "model_name": "fraud", "model_version": "3", "id": "req-1",
        "parameters": {"tokens": 4, "message_id": "S:1", "model_digest": BY.digest},
        "outputs": [{"name": "y", "datatype": "FP64", "shape": [2], "data": [1.5, 2.5]}],
    }  # fmt: skip


def test_a_dead_letter_is_the_payload_with_the_error_in_one_line() -> None:
    original = delivery(b"\x00raw bytes", {"Nats-Msg-Id": "k", "trace": "t"}, key="k")
    body, headers = dead_letter(original, "fraud", InvalidInput("line one\r\nline two"))
    assert body == b"\x00raw bytes"
    assert headers["Pitstop-Error"] == "line one line two"
    assert headers["Pitstop-Error-Kind"] == "invalid_input"
    assert headers["trace"] == "t"
    assert "Nats-Msg-Id" not in headers  # the broker's own headers are not carried
    long = dead_letter(original, "fraud", "x" * 5000)[1]["Pitstop-Error"]
    assert len(long) == 1024


def test_a_kept_field_may_not_take_a_name_of_the_answer() -> None:
    from pydantic import ValidationError

    from pitstop.settings import StreamSettings

    base = {"model": "m", "from": "nats://h:1/a", "to": "nats://h:1/b"}
    assert StreamSettings.model_validate({**base, "keep": ["id", "ts"]}).keep == ["id", "ts"]
    with pytest.raises(ValidationError, match="'message_id' is a field of the answer"):
        StreamSettings.model_validate({**base, "keep": ["id", "message_id"]})


def test_records_that_overflow_or_differ_in_length_fail_alone() -> None:
    ids = TensorSpec("ids", "INT64", (-1, -1))
    records = [{"ids": [1, 2]}, {"ids": [2**70, 1]}, {"ids": [3, 4]}]
    inputs, ok, errors = record_inputs(records, [ids], {}, [])
    assert ok.tolist() == [True, False, True]
    assert "int64" in errors[1]
    np.testing.assert_array_equal(inputs["ids"], [[1, 2], [3, 4]])
    # a variable-length input takes the first row's length: lengths are part of the group key
    assert key({"ids": [1, 2, 3]}) != key({"ids": [4, 5]})
    assert key({"ids": [1, 2, 3]}) == key({"ids": [4, 5, 6]})


def test_only_headers_every_client_can_publish_are_carried() -> None:
    from pitstop.stream.broker import MAX_CARRIED, carried

    headers = {"trace": "t", "x/y": "bad name", "multi": "a\r\nb", "long": "v" * 5000,
               "Nats-Expected-Stream": "S", "Pitstop-Model": "spoofed"}  # fmt: skip
    assert carried(headers) == {"trace": "t"}
    many = {f"h{i}": str(i) for i in range(200)}
    assert len(carried(many)) == MAX_CARRIED
