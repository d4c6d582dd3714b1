"""Triton's generate extension: a flat JSON body in, a flat JSON body out.

A request is a JSON object whose keys are the model's input names, each with a JSON value (a
string, number, boolean or nested lists of them), plus optional ``id`` and ``parameters``::

    {"text_input": "What is a pitstop?", "max_tokens": 16, "parameters": {"stream": true}}

Each value becomes a tensor of the input's declared datatype whose shape is the value's own
nesting, with dimensions of 1 put in front up to the declared rank (``"hi"`` for a BYTES input
of shape ``[-1, 1]`` is ``[["hi"]]``). A key of ``parameters`` that names an input and is not a
top-level key is that input too (as Triton does for samplers' settings); the rest stay request
parameters. A response is ``model_name``, ``model_version``, ``id`` when given, and each output
by name: a one-element output as its value, any other as nested lists in its shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from pitstop.errors import InvalidInput
from pitstop.protocol.json_codec import decode_input, encode_output
from pitstop.protocol.tensor import InferRequest, InferResponse, TensorSpec

RESERVED: Final = frozenset({"id", "parameters"})
MAX_RANK: Final = 32


def generate_request(body: Mapping[str, Any], inputs: Sequence[TensorSpec]) -> InferRequest:
    """The inference request a generate body asks for, against the model's ``inputs``."""
    specs = {spec.name: spec for spec in inputs}
    unknown = sorted(set(body) - set(specs) - RESERVED)
    if unknown:
        names = ", ".join(repr(name) for name in specs) or "none"
        raise InvalidInput(f"{unknown[0]!r}: the model has no input of that name (inputs: {names})")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id must be a string")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be an object")
    parameters = dict(parameters)
    arrays = {}
    datatypes = {}
    for name, spec in specs.items():
        if name in body:
            value = body[name]
        elif name in parameters:
            value = parameters.pop(name)
        else:
            continue  # a missing input is refused with the signature check, naming it
        shape = _shape_of(value, len(spec.shape), f"input {name!r}")
        raw = {"name": name, "datatype": spec.datatype, "shape": shape, "data": value}
        _, datatype, array = decode_input(raw, f"input {name!r}")
        arrays[name] = array
        datatypes[name] = datatype
    return InferRequest(
        inputs=arrays, id=request_id, parameters=parameters, input_datatypes=datatypes
    )


def generate_response(response: InferResponse) -> dict[str, Any]:
    """The flat JSON body of one response (one event of a stream)."""
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        body["id"] = response.id
    for name, array in response.outputs.items():
        encoded = encode_output(name, array)
        data: list[Any] = encoded["data"]
        body[name] = data[0] if len(data) == 1 else _nest(data, list(array.shape))
    return body


def _shape_of(value: object, rank: int, where: str) -> list[int]:
    """The shape of a JSON value (its nesting, the first element at each level), with leading
    ones up to ``rank``; the element count is checked when the data is decoded."""
    shape: list[int] = []
    while isinstance(value, list):
        if len(shape) >= MAX_RANK:
            raise InvalidInput(f"{where}: nested deeper than {MAX_RANK} levels")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    if len(shape) > rank:
        raise InvalidInput(
            f"{where}: a value of {len(shape)} dimensions for an input of {rank} dimensions"
        )
    return [1] * (rank - len(shape)) + shape


def _nest(flat: list[Any], shape: list[int]) -> Any:
    """Row-major ``flat`` as nested lists of ``shape``."""
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]
