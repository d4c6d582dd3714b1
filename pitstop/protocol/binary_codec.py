"""The HTTP binary tensor extension (``binary_tensor_data``): a JSON header, then raw tensors.

Request body: the V2 JSON request, then the raw bytes of every input whose
``parameters.binary_data_size`` is set, in the order those inputs appear in the JSON. The
``Inference-Header-Content-Length`` header gives the size of the JSON part; without it the
whole body is JSON. Byte layout: :mod:`pitstop.protocol.raw_tensor`.

Response: an output travels as raw bytes when the request asked for it (output
``parameters.binary_data: true``, or request ``parameters.binary_data_output: true``, which an
output's own ``binary_data: false`` overrides). Its JSON entry then carries
``parameters.binary_data_size`` instead of ``data``, and the response names the size of its JSON
part in the same header. Without binary outputs the response is plain JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from pitstop.errors import InvalidInput, PayloadTooLarge, Unsupported
from pitstop.protocol.datatype import datatype_of
from pitstop.protocol.json_codec import (
    decode_header,
    decode_input,
    decode_request,
    encode_output,
    shared_entries,
)
from pitstop.protocol.raw_tensor import decode_raw, encode_raw
from pitstop.protocol.reference import natural
from pitstop.protocol.tensor import InferRequest, InferResponse, Parameters

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
_NUMERIC: Final = frozenset("biuf")
"""HTTP header: bytes of JSON at the start of a body that carries binary tensors."""


@dataclass(frozen=True)
class EncodedBody:
    """A response body; ``json_length`` is set (for :data:`HEADER_LENGTH`) when binary follows."""

    content: bytes
    json_length: int | None = None

    @property
    def media_type(self) -> str:
        return "application/json" if self.json_length is None else "application/octet-stream"


def decode_body(body: bytes, header_length: str | None) -> InferRequest:
    """The request in an HTTP infer body; ``header_length`` is the :data:`HEADER_LENGTH` value.

    Raises :class:`InvalidInput` naming the problem: a malformed header value, a JSON part
    that is not JSON, a ``binary_data_size`` that overruns the body, or bytes no input claims.
    """
    if header_length is None:
        return decode_request(_json(body, "request body"), _BinaryInputs(None).decode)
    size = _header_length(header_length, len(body))
    binary = _BinaryInputs(memoryview(body)[size:])
    request = decode_request(_json(body[:size], "the JSON part of the body"), binary.decode)
    binary.check_consumed()
    return request


def encode_request(request: InferRequest) -> tuple[bytes, int]:
    """``request`` as a body of this extension with every input in binary: ``(body, length
    of its JSON part)``. What a client sends; the server uses it to hand a request decoded
    elsewhere (in another process) back in a form that is cheap to decode again."""
    header: dict[str, Any] = {}
    if request.id is not None:
        header["id"] = request.id
    if request.parameters:
        header["parameters"] = dict(request.parameters)
    inputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in request.inputs.items():
        raw = encode_raw(array)
        chunks.append(raw)
        datatype = request.input_datatypes.get(name) or datatype_of(array)
        inputs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    for name, shared in request.shared_inputs.items():
        inputs.append(
            {
                "name": name,
                "datatype": shared.datatype,
                "shape": list(shared.shape),
                "parameters": shared.ref.to_parameters(),
            }
        )
    header["inputs"] = inputs
    if request.outputs:
        header["outputs"] = [
            {"name": o.name, "parameters": dict(o.parameters)} for o in request.outputs
        ]
    content = orjson.dumps(header)
    return content + b"".join(chunks), len(content)


def normalize_body(body: bytes, header_length: str | None) -> tuple[bytes, str]:
    """The request in ``body`` (as :func:`decode_body` reads it), re-encoded with
    :func:`encode_request`: a small JSON part and raw tensors, whatever the original held."""
    encoded, length = encode_request(decode_body(body, header_length))
    return encoded, str(length)


JSON_SLICE: Final = 65536
"""Output data is written to JSON this many elements per orjson call. One call holds the GIL
throughout; between slices the event loop's thread can run (a slice takes about a millisecond)."""


def _json_entry(entry: dict[str, Any]) -> bytes:
    """``entry`` as JSON, its ``data`` written slice by slice."""
    data = entry.get("data")
    if data is None or len(data) <= JSON_SLICE:
        return orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY)
    head = orjson.dumps({k: v for k, v in entry.items() if k != "data"})
    slices = (
        orjson.dumps(data[i : i + JSON_SLICE], option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
        for i in range(0, len(data), JSON_SLICE)
    )
    return b"".join((head[:-1], b',"data":[', b",".join(slices), b"]}"))


def encode_body(response: InferResponse, request_parameters: Parameters) -> EncodedBody:
    """The HTTP body of ``response``, with the outputs the request asked for in binary."""
    binary_default = request_parameters.get("binary_data_output") is True
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in response.outputs.items():
        wanted = response.output_parameters.get(name, {}).get("binary_data", binary_default)
        if wanted is True:
            raw = encode_raw(array)
            chunks.append(raw)
            entries.append(_binary_entry(name, array, len(raw)))
        elif array.dtype.kind in _NUMERIC:
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise Unsupported(
                    f"output {name!r} holds NaN or infinity, which JSON cannot carry; request "
                    "it as binary data (output parameter binary_data: true)"
                )
            # orjson writes the numpy buffer directly: no Python list per element.
            entries.append(
                {
                    "name": name,
                    "datatype": datatype_of(array),
                    "shape": list(array.shape),
                    "data": np.ascontiguousarray(array).reshape(-1),
                }
            )
        else:
            entries.append(encode_output(name, array))
    entries += shared_entries(response)
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = dict(response.parameters)
    head = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    outputs = b",".join(_json_entry(entry) for entry in entries)
    content = b"".join((head[:-1], b',"outputs":[', outputs, b"]}"))  # head holds model_name
    if not chunks:
        return EncodedBody(content)
    return EncodedBody(content + b"".join(chunks), json_length=len(content))


def _binary_entry(name: str, array: np.ndarray, size: int) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype_of(array),
        "shape": list(array.shape),
        "parameters": {"binary_data_size": size},
    }


def _header_length(value: str, body_size: int) -> int:
    size = natural(value.strip())
    if size is None:
        raise InvalidInput(f"{HEADER_LENGTH} must be a non-negative integer, got {value!r}")
    if size > body_size:
        raise InvalidInput(f"{HEADER_LENGTH} is {size} but the body has only {body_size} bytes")
    return size


def _json(data: bytes | memoryview, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "memory" in str(exc):  # orjson's only word for an allocation that failed
            raise PayloadTooLarge(f"{what} needs more memory to parse than is allowed") from exc
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from exc


class _BinaryInputs:
    """Hands each input with ``binary_data_size`` the next bytes after the JSON header."""

    def __init__(self, tail: memoryview | None) -> None:
        self._tail = tail
        self._offset = 0

    def decode(self, raw: object, where: str) -> tuple[str, str, np.ndarray]:
        if not isinstance(raw, dict):
            return decode_input(raw, where)
        parameters = raw.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            return decode_input(raw, where)
        name, datatype, shape = decode_header(raw, where)
        where = f"input {name!r}"
        if self._tail is None:
            raise InvalidInput(
                f"{where}: binary_data_size needs the {HEADER_LENGTH} header to find the data"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
        if "data" in raw:
            raise InvalidInput(f"{where}: has both 'data' and binary_data_size; send one")
        end = self._offset + size
        if end > len(self._tail):
            raise InvalidInput(
                f"{where}: binary_data_size {size} runs past the end of the body "
                f"({len(self._tail) - self._offset} bytes left after the JSON header)"
            )
        data = self._tail[self._offset : end]
        self._offset = end
        return name, datatype, decode_raw(datatype, shape, data, where)

    def check_consumed(self) -> None:
        left = 0 if self._tail is None else len(self._tail) - self._offset
        if left:
            raise InvalidInput(
                f"{left} bytes after the JSON header belong to no input; each binary input "
                "needs parameters.binary_data_size"
            )
