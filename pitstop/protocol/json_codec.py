"""The V2 JSON body codec: request dicts to :class:`InferRequest`, responses back to dicts.

Decoding validates every field and names the offending one in :class:`InvalidInput`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from pitstop.errors import InvalidInput, Unsupported
from pitstop.protocol.datatype import datatype_of, numpy_dtype
from pitstop.protocol.shape import decode_shape, element_count
from pitstop.protocol.shared_memory import BYTE_SIZE, OFFSET, REGION, SharedInput, shared_ref
from pitstop.protocol.tensor import InferRequest, InferResponse, RequestedOutput

_BINARY_ONLY = frozenset({"FP16", "BF16"})

InputDecoder = Callable[[object, str], tuple[str, str, np.ndarray]]
"""Decodes one input object (and where it sits, for messages) to ``(name, datatype, array)``."""


def decode_request(body: object, decode: InputDecoder | None = None) -> InferRequest:
    """Validate a parsed JSON request body and turn it into an :class:`InferRequest`.

    ``decode`` decodes each input (default :func:`decode_input`); the binary tensor extension
    passes one that also reads inputs from the bytes after the JSON header.
    """
    decoder = decode or decode_input
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object with an 'inputs' list")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    parameters = _parameters(body.get("parameters"), "parameters")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    shared: dict[str, SharedInput] = {}
    for index, raw in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        reference = _shared_input(raw, where)
        if reference is not None:
            name, shared_input = reference
        else:
            name, datatype, array = decoder(raw, where)
        if name in inputs or name in shared:
            raise InvalidInput(f"inputs[{index}].name: duplicate input {name!r}")
        if reference is not None:
            shared[name] = shared_input
        else:
            inputs[name] = array
            datatypes[name] = datatype
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        outputs=_requested_outputs(body.get("outputs")),
        input_datatypes=datatypes,
        shared_inputs=shared,
    )


def _shared_input(raw: object, where: str) -> tuple[str, SharedInput] | None:
    """``(name, input)`` when the input object refers to shared memory, else None."""
    if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict):
        return None
    parameters = raw["parameters"]
    if REGION not in parameters and OFFSET not in parameters and BYTE_SIZE not in parameters:
        return None
    name, datatype, shape = decode_header(raw, where)
    where = f"input {name!r}"
    ref = shared_ref(parameters, where)
    assert ref is not None  # shared_ref refuses an offset or size without a region
    if "data" in raw or "binary_data_size" in parameters:
        raise InvalidInput(f"{where}: sends data as well as {REGION}; send one")
    numpy_dtype(datatype, f"{where}: datatype")
    return name, SharedInput(datatype, shape, ref)


def decode_input(raw: object, where: str) -> tuple[str, str, np.ndarray]:
    """Decode one JSON input tensor: ``(name, datatype, array shaped as declared)``."""
    name, datatype, shape = decode_header(raw, where)
    fields = cast(dict[str, Any], raw)  # decode_header checked it is an object
    where = f"input {name!r}"
    dtype = numpy_dtype(datatype, f"{where}: datatype")
    if datatype in _BINARY_ONLY:
        raise InvalidInput(f"{where}: {datatype} data can only be sent as binary tensor data")
    if "data" not in fields:
        raise InvalidInput(f"{where}: 'data' is missing")
    count = element_count(shape)
    flat = _flatten(fields["data"], count, f"{where}: data")
    if len(flat) != count:
        sent = f"at least {len(flat)}" if len(flat) > count else str(len(flat))
        raise InvalidInput(
            f"{where}: data has {sent} elements but shape {list(shape)} needs {count}"
        )
    array = _to_array(flat, datatype, dtype, where)
    return name, datatype, array.reshape(shape)


def decode_header(raw: object, where: str) -> tuple[str, str, tuple[int, ...]]:
    """The ``(name, datatype, shape)`` of one input object, checked; not its data."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name must be a non-empty string")
    where = f"input {name!r}"
    shape = decode_shape(raw.get("shape"), f"{where}: shape")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"{where}: datatype must be a string such as 'FP32'")
    return name, datatype, shape


def _flatten(data: object, count: int, where: str) -> list[Any]:
    """``data`` (nested lists, row-major) as a flat list. Stops as soon as it has seen more
    values, or more lists, than ``count`` values could need: a body of a million empty lists
    must not cost a walk over all of them (rows are lists of at least one value, so a shape of
    ``count`` values is at most ``count + 1`` lists)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    budget = 2 * count + 2
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        budget -= 1
        if budget < 0:
            raise InvalidInput(f"{where} nests more values or lists than its shape holds")
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
            continue
        if len(flat) > count:
            break
    return flat


def _to_array(flat: list[Any], datatype: str, dtype: np.dtype[Any], where: str) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty(len(flat), dtype=object)
        for i, item in enumerate(flat):
            if isinstance(item, str):
                out[i] = item.encode("utf-8")
            elif isinstance(item, bytes):
                out[i] = item
            else:
                raise InvalidInput(f"{where}: BYTES data must be strings, got {item!r}")
        return out
    if datatype == "BOOL":
        if not all(isinstance(item, bool) for item in flat):
            raise InvalidInput(f"{where}: BOOL data must be true/false")
        return np.asarray(flat, dtype=np.bool_)
    fast = _numeric(flat, datatype, dtype, where)
    if fast is not None:
        return fast
    if not all(isinstance(item, int | float) and not isinstance(item, bool) for item in flat):
        bad = next(
            item for item in flat if not isinstance(item, int | float) or isinstance(item, bool)
        )
        raise InvalidInput(f"{where}: {datatype} data must be numbers, got {bad!r}")
    if dtype.kind in "iu" and any(isinstance(item, float) for item in flat):
        raise InvalidInput(f"{where}: {datatype} data must be integers")
    try:
        return np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise InvalidInput(f"{where}: values do not fit {datatype}: {exc}") from exc


def _numeric(flat: list[Any], datatype: str, dtype: np.dtype[Any], where: str) -> np.ndarray | None:
    """numpy's own conversion, when it shows the data are plain numbers (the common case, and
    the hot path: no Python loop per element). None sends odd data to the checks that name the
    offending element."""
    raw = np.asarray(flat)
    kind = raw.dtype.kind
    if kind not in "iuf" or (kind == "f" and dtype.kind in "iu"):
        return None
    if dtype.kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInput(f"{where}: values do not fit {datatype}")
    return raw.astype(dtype, copy=False)


def _parameters(raw: object, where: str) -> dict[str, Any]:
    """A parameters object: names to JSON scalars (string, number, boolean), as the protocol
    defines them; null values are dropped."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"'{where}' must be an object")
    for key, value in raw.items():
        if not isinstance(value, str | int | float | bool | None):
            raise InvalidInput(
                f"{where}.{key} must be a string, number or boolean, got {type(value).__name__}"
            )
    if None in raw.values():
        return {key: value for key, value in raw.items() if value is not None}
    return raw


def _requested_outputs(raw: object) -> tuple[RequestedOutput, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be a list of {name, parameters}")
    outputs = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{index}].name must be a string")
        outputs.append(
            RequestedOutput(
                item["name"], _parameters(item.get("parameters"), f"outputs[{index}].parameters")
            )
        )
    return tuple(outputs)


def encode_response(response: InferResponse) -> dict[str, Any]:
    """The JSON body of an inference response."""
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": [encode_output(name, array) for name, array in response.outputs.items()]
        + shared_entries(response),
    }
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = dict(response.parameters)
    return body


def shared_entries(response: InferResponse) -> list[dict[str, Any]]:
    """The output entries of the outputs written to shared memory: no data, the region."""
    return [
        {
            "name": name,
            "datatype": shared.datatype,
            "shape": list(shared.shape),
            "parameters": shared.to_parameters(),
        }
        for name, shared in response.shared_outputs.items()
    ]


def encode_output(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = datatype_of(array)
    data: list[Any]
    if datatype == "BYTES":
        data = [_text(item, name) for item in array.reshape(-1)]
    else:
        data = array.reshape(-1).tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def _text(item: object, name: str) -> str:
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            raise Unsupported(
                f"output {name!r} holds bytes that are not UTF-8; request it as binary data"
            ) from None
    return str(item)
