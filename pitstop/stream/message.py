"""A message's bytes to model inputs, and model outputs back to an answer's bytes.

Two formats (``format`` of the stream): a **V2 inference request** (``{"inputs": [...]}``, as
``POST /v2/models/{m}/infer`` takes, any number of rows) or a **record**: one flat JSON object,
one row, whose fields map to the inputs as ``pitstop batch`` maps columns
(:mod:`pitstop.protocol.columns`). Records of one batch with the same fields are converted
together; a record that does not convert fails alone.

Answers:

- to a V2 request, a V2 response (``model_name``, ``model_version``, ``id`` — the request's, else
  the message id — and ``outputs``), with ``parameters.message_id`` and
  ``parameters.model_digest``;
- to a record, ``{"message_id", "model_name", "model_version", "model_digest", <kept fields>,
  "outputs": {name: value}}`` (a row's value: a number, a string or a list); a kept field may
  not take one of those names (``settings.ANSWER_FIELDS``).

Both carry the message's headers on, and ``Pitstop-Message-Id``, ``Pitstop-Model``,
``Pitstop-Model-Version``, ``Pitstop-Model-Digest``. A dead letter is the original payload with
``Pitstop-Error``, ``Pitstop-Error-Kind`` and ``Pitstop-Deliveries`` headers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from pitstop.errors import InvalidInput, PitstopError, error_kind
from pitstop.protocol.columns import Column, plan, tensors
from pitstop.protocol.json_codec import decode_request, encode_output
from pitstop.protocol.tensor import InferRequest, TensorSpec
from pitstop.stream.broker import Delivery, carried

MAX_HEADER_CHARS = 1024
"""Error texts in dead-letter headers are cut to this (NATS headers are one line each)."""


class Kind(enum.Enum):
    V2 = "v2"
    RECORD = "record"


@dataclass(frozen=True)
class Message:
    """A delivery whose payload parsed: a V2 request, or a record."""

    delivery: Delivery
    kind: Kind
    request: InferRequest | None = None
    record: Mapping[str, Any] | None = None

    @property
    def rows(self) -> int:
        if self.request is None:
            return 1
        first = next(iter(self.request.inputs.values()))
        return int(first.shape[0]) if first.ndim else 1


def parse(delivery: Delivery, fmt: str, max_bytes: int) -> Message:
    """The delivery's payload as a Message. Raises InvalidInput saying what is wrong with it."""
    body = delivery.body
    if len(body) > max_bytes:
        raise InvalidInput(f"the message has {len(body)} bytes, more than max_message_bytes "
                           f"({max_bytes})")  # fmt: skip
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the message is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidInput(f"the message is a JSON {type(parsed).__name__}, not an object")
    v2 = fmt == "v2" or (fmt == "auto" and isinstance(parsed.get("inputs"), list))
    if v2:
        return Message(delivery, Kind.V2, request=decode_request(parsed))
    for name, value in parsed.items():
        if isinstance(value, dict):
            raise InvalidInput(f"field {name!r}: a record's fields are numbers, strings or lists")
    return Message(delivery, Kind.RECORD, record=parsed)


def group_key(message: Message, sticky: str | None) -> tuple[Any, ...]:
    """Messages with equal keys can be scored in one model call: the same kind, the same
    fields (records) or input names, datatypes and row shapes, outputs and parameters (V2),
    and the same sticky routing value."""
    routing = None
    if sticky:  # header names compare without case, as HTTP's
        headers = message.delivery.headers
        routing = next((v for k, v in headers.items() if k.lower() == sticky), None)
    if message.record is not None:
        # List lengths too: a variable-length input takes its row shape from the first row.
        lengths = tuple(len(v) if isinstance(v, list) else -1 for v in message.record.values())
        return (Kind.RECORD, tuple(message.record), lengths, routing)
    request = message.request
    assert request is not None
    inputs = tuple(
        (name, str(array.dtype), array.shape[1:], request.input_datatypes.get(name))
        for name, array in request.inputs.items()
    )
    rows = {array.shape[0] if array.ndim else None for array in request.inputs.values()}
    if len(rows) != 1 or None in rows:
        return (Kind.V2, message.delivery.id)  # inputs of different lengths: alone
    outputs = tuple((o.name, orjson.dumps(o.parameters, option=orjson.OPT_SORT_KEYS))
                    for o in request.outputs)  # fmt: skip
    parameters = orjson.dumps(dict(request.parameters), option=orjson.OPT_SORT_KEYS)
    return (Kind.V2, inputs, outputs, parameters, routing)


def v2_request(messages: Sequence[Message]) -> InferRequest:
    """One request holding the rows of every message, in order (messages of one group key)."""
    first = messages[0].request
    assert first is not None
    if len(messages) == 1:
        return first
    requests = [m.request for m in messages if m.request is not None]
    inputs = {name: np.concatenate([r.inputs[name] for r in requests]) for name in first.inputs}
    return InferRequest(
        inputs=inputs,
        parameters=first.parameters,
        outputs=first.outputs,
        input_datatypes=first.input_datatypes,
    )


def record_inputs(
    records: Sequence[Mapping[str, Any]],
    signature: Sequence[TensorSpec],
    columns: Mapping[str, Sequence[str]],
    keep: Sequence[str],
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
    """``(inputs, ok, errors)`` for records with the same fields: the inputs of the rows where
    ``ok``, and why each other row failed. Raises InvalidInput when the fields cannot feed the
    inputs at all (every record fails with it)."""
    names = list(records[0])
    sources = plan(signature, names, columns, keep)
    table: dict[str, Column] = {}
    for name in {column for source in sources for column in source.columns}:
        table[name] = _column([record.get(name) for record in records])
    return tensors(sources, table, len(records))


def _column(values: list[Any]) -> Column:
    valid = np.array([value is not None for value in values], dtype=bool)
    kinds = {type(value) for value in values}
    if kinds <= {int} or kinds <= {int, float}:
        try:
            return np.array(values, dtype=np.int64 if kinds == {int} else np.float64), valid
        except OverflowError:
            pass
    array = np.empty(len(values), dtype=object)
    for row, value in enumerate(values):
        array[row] = value
    return array, valid


@dataclass(frozen=True)
class Answerer:
    """Who answered: stamped on every answer."""

    model: str
    version: int
    digest: str


def prediction_id(message: Message) -> str:
    """The prediction id of a message's answer (feedback names it): its V2 request's ``id``,
    else the message id."""
    request = message.request
    return request.id if request is not None and request.id else message.delivery.id


def answer(
    message: Message,
    outputs: Mapping[str, np.ndarray],
    by: Answerer,
    parameters: Mapping[str, Any],
    keep: Sequence[str],
) -> tuple[bytes, dict[str, str]]:
    """The answer's payload and headers; ``outputs`` hold this message's rows only."""
    delivery = message.delivery
    if message.request is not None:
        body: dict[str, Any] = {
            "model_name": by.model,
            "model_version": str(by.version),
            "id": message.request.id or delivery.id,
            "parameters": {**parameters, "message_id": delivery.id, "model_digest": by.digest},
            "outputs": [encode_output(name, array) for name, array in outputs.items()],
        }
    else:
        record = message.record or {}
        body = {
            "message_id": delivery.id,
            "model_name": by.model,
            "model_version": str(by.version),
            "model_digest": by.digest,
            **{field: record.get(field) for field in keep},
            "outputs": {name: _row(name, array) for name, array in outputs.items()},
        }
    headers = carried(delivery.headers)
    headers.update({
        "Pitstop-Message-Id": delivery.id,
        "Pitstop-Prediction-Id": prediction_id(message),
        "Pitstop-Model": by.model,
        "Pitstop-Model-Version": str(by.version),
        "Pitstop-Model-Digest": by.digest,
    })  # fmt: skip
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), headers


def _row(name: str, array: np.ndarray) -> Any:
    """One row of an output as JSON: a scalar for a one-value row, else a list."""
    row = array[0] if array.ndim else array
    if isinstance(row, np.ndarray) and row.size == 1 and row.ndim <= 1:
        row = row.reshape(-1)[0]
    if isinstance(row, np.ndarray):
        if row.dtype == object:
            return encode_output(name, row)["data"]
        return row.tolist()
    if isinstance(row, bytes):
        return encode_output(name, np.array([row], dtype=object))["data"][0]
    return row.item() if isinstance(row, np.generic) else row


def dead_letter(
    delivery: Delivery, model: str, error: PitstopError | str, kind: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """The dead letter of ``delivery``: its payload as it came, the error in headers."""
    text = str(error)
    if kind is None:
        kind = error_kind(error) if isinstance(error, PitstopError) else "error"
    headers = carried(delivery.headers)
    headers.update({
        "Pitstop-Message-Id": delivery.id,
        "Pitstop-Model": model,
        "Pitstop-Error": " ".join(text.split())[:MAX_HEADER_CHARS],
        "Pitstop-Error-Kind": kind,
        "Pitstop-Deliveries": str(delivery.deliveries),
    })  # fmt: skip
    return delivery.body, headers
