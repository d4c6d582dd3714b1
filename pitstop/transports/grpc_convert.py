"""Protobuf messages of ``inference.GRPCInferenceService`` ↔ :mod:`pitstop.protocol` types.

Tensor data arrives either typed (each input's ``contents``, in the field its datatype names) or
raw (``raw_input_contents``, one entry per input, in the layout of
:mod:`pitstop.protocol.raw_tensor`); never both (a request mixing them is refused naming the
input). Responses are raw (``raw_output_contents``), as Triton's always are, unless typed
contents are asked for (:func:`typed_outputs`); FP16 and BF16 have no typed field, so a response
with such an output is raw throughout (a response cannot mix the two). Every problem raises
:class:`InvalidInput` naming the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import numpy as np
from google.protobuf.message import DecodeError, Message

from pitstop.errors import InvalidInput
from pitstop.protocol.binary_codec import encode_request
from pitstop.protocol.datatype import datatype_of, numpy_dtype
from pitstop.protocol.model_config import CONFIG_DATATYPES, ModelConfig
from pitstop.protocol.raw_tensor import decode_raw, encode_raw
from pitstop.protocol.shape import decode_shape, element_count
from pitstop.protocol.shared_memory import SharedInput, shared_ref
from pitstop.protocol.tensor import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    Parameters,
    RequestedOutput,
    TensorSpec,
)
from pitstop.serving.parameters import bool_parameter
from pitstop.serving.repository import RepositoryEntry
from pitstop.serving.statistics import VersionStatistics
from pitstop.transports.proto import inference_pb2 as pb

TYPED_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Which ``InferTensorContents`` field carries a datatype; FP16/BF16 have none (raw only)."""

_CONTENT_FIELDS: Final = tuple(sorted(set(TYPED_FIELD.values())))

TYPED_SLICE: Final = 32_768
"""Elements converted per C call when encoding typed contents."""


class _ParameterMessage(Protocol):
    def WhichOneof(self, name: str) -> str | None: ...


# ---- requests ------------------------------------------------------------------------------

M = TypeVar("M", bound=Message)


def parse(message_type: type[M], data: bytes) -> M:
    """``data`` parsed as a ``message_type``; InvalidInput when it is not one."""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        name = message_type.DESCRIPTOR.name
        raise InvalidInput(f"the request is not a valid {name} message: {exc}") from exc


_RAW_CONTENTS: Final = 7
"""``ModelInferRequest.raw_input_contents``'s field number (model_name is 1, model_version 2)."""


def peek_infer(data: bytes) -> tuple[str, str, bool]:
    """(model_name, model_version, whether raw_input_contents is used) of a serialized
    ``ModelInferRequest``, read from its top-level fields only: nested messages (the inputs and
    their typed contents) are skipped by their length, so this costs a few operations per
    top-level field however large the tensors. InvalidInput when the framing is not protobuf."""
    name, version, raw = b"", b"", False
    view, offset, end = memoryview(data), 0, len(data)
    try:
        while offset < end:
            tag, offset = _varint(view, offset)
            number, wire = tag >> 3, tag & 7
            if wire == 2:
                length, offset = _varint(view, offset)
                if offset + length > end:
                    raise ValueError("a field runs past the end")
                if number == 1:
                    name = bytes(view[offset : offset + length])
                elif number == 2:
                    version = bytes(view[offset : offset + length])
                elif number == _RAW_CONTENTS:
                    raw = True
                offset += length
            elif wire == 0:
                _, offset = _varint(view, offset)
            elif wire in (1, 5):
                offset += 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire}")
        if offset > end:
            raise ValueError("a field runs past the end")
        return name.decode("utf-8"), version.decode("utf-8"), raw
    except (ValueError, IndexError) as exc:
        raise InvalidInput(f"the request is not a valid ModelInferRequest message: {exc}") from None


def _varint(view: memoryview, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = view[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")


def decode_infer_request(message: pb.ModelInferRequest) -> InferRequest:
    """The request a ``ModelInferRequest`` carries (model name and version are not part of it).
    Inputs in shared memory (their parameters name a region) have no contents and no
    ``raw_input_contents`` entry: the entries belong to the other inputs, in order."""
    raw = list(message.raw_input_contents)
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    shared: dict[str, SharedInput] = {}
    if not message.inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    references = [
        shared_ref(decode_parameters(t.parameters), f"input {t.name!r}") if t.parameters else None
        for t in message.inputs
    ]
    carried = [t for t, ref in zip(message.inputs, references, strict=True) if ref is None]
    if raw and len(raw) != len(carried):
        typed = [t.name for t in carried if t.HasField("contents")]
        if typed:
            raise InvalidInput(
                f"contents field must not be specified when using raw_input_contents for "
                f"{typed[0]!r} for model {message.model_name!r} (input {typed[0]!r} sets "
                "contents; send every input raw or every input typed)"
            )
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(carried)} inputs with data; send one entry per input, in input order"
        )
    entries = iter(raw)
    for index, (tensor, ref) in enumerate(zip(message.inputs, references, strict=True)):
        if not tensor.name:
            raise InvalidInput(f"inputs[{index}].name must be a non-empty string")
        where = f"input {tensor.name!r}"
        if tensor.name in inputs or tensor.name in shared:
            raise InvalidInput(f"inputs[{index}].name: duplicate input {tensor.name!r}")
        shape = decode_shape(list(tensor.shape), f"{where}: shape")
        has_contents = tensor.HasField("contents") and _has_contents(tensor.contents)
        if ref is not None:
            if has_contents:
                raise InvalidInput(f"{where}: sets contents as well as shared_memory_region")
            numpy_dtype(tensor.datatype, f"{where}: datatype")
            shared[tensor.name] = SharedInput(tensor.datatype, shape, ref)
            continue
        if raw:
            if has_contents:
                raise InvalidInput(
                    f"contents field must not be specified when using raw_input_contents for "
                    f"{tensor.name!r} for model {message.model_name!r}"
                )
            array = decode_raw(tensor.datatype, shape, next(entries), where)
        else:
            array = _decode_typed(tensor.datatype, shape, tensor.contents, where)
        inputs[tensor.name] = array
        datatypes[tensor.name] = tensor.datatype
    outputs = tuple(
        RequestedOutput(output.name, decode_parameters(output.parameters))
        for output in message.outputs
    )
    return InferRequest(
        inputs=inputs,
        id=message.id or None,
        parameters=decode_parameters(message.parameters),
        outputs=outputs,
        input_datatypes=datatypes,
        shared_inputs=shared,
    )


@dataclass(frozen=True)
class NormalizedInfer:
    """A ``ModelInferRequest`` decoded in the codec worker and handed back: what it addresses,
    and its request as a binary tensor body (:func:`binary_codec.encode_request`)."""

    model_name: str
    model_version: str
    raw: bool
    """Whether it used ``raw_input_contents`` (its response answers in kind)."""
    body: bytes
    header_length: str


def normalize_infer(data: bytes, _hint: str | None = None) -> NormalizedInfer:
    """Parse and decode a serialized ``ModelInferRequest`` (in the codec worker: typed contents
    are converted element by element, in C calls that hold the GIL)."""
    message = parse(pb.ModelInferRequest, data)
    body, length = encode_request(decode_infer_request(message))
    return NormalizedInfer(
        message.model_name,
        message.model_version,
        bool(message.raw_input_contents),
        body,
        str(length),
    )


def _decode_typed(
    datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents, where: str
) -> np.ndarray:
    dtype = numpy_dtype(datatype, f"{where}: datatype")
    field = TYPED_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"{where}: {datatype} data can only be sent as raw_input_contents")
    for other in _CONTENT_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidInput(f"{where}: {datatype} data belongs in contents.{field}, not {other}")
    values: Sequence[Any] = getattr(contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise InvalidInput(
            f"{where}: contents.{field} has {len(values)} elements but shape {list(shape)} "
            f"needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    wide = np.asarray(values, dtype=np.float64 if dtype.kind == "f" else None)
    if dtype.kind in "iu" and wide.size:
        # int_contents and uint_contents are 32-bit; narrower types must not wrap around.
        limits = np.iinfo(dtype.name)
        if wide.min() < limits.min or wide.max() > limits.max:
            raise InvalidInput(f"{where}: values do not fit {datatype}")
    return wide.astype(dtype).reshape(shape)


def _has_contents(contents: pb.InferTensorContents) -> bool:
    return any(len(getattr(contents, field)) for field in _CONTENT_FIELDS)


def decode_parameters(parameters: Mapping[str, _ParameterMessage]) -> dict[str, Any]:
    """``map<string, InferParameter>`` (or ``ModelRepositoryParameter``) as plain values."""
    decoded: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            decoded[key] = getattr(parameter, choice)
    return decoded


# ---- responses -----------------------------------------------------------------------------


TYPED_OUTPUTS_PARAMETER: Final = "typed_output_contents"
"""The request parameter asking for typed output contents instead of raw ones."""


def typed_outputs(parameters: Mapping[str, Any], in_kind: bool) -> bool:
    """Whether to answer with typed contents: the request's ``typed_output_contents``
    parameter when it gives one, else ``in_kind`` (the request was typed and the server's
    ``grpc_typed_outputs`` setting is on)."""
    return bool_parameter(parameters, TYPED_OUTPUTS_PARAMETER, in_kind)


def encode_infer_response(response: InferResponse, raw: bool) -> pb.ModelInferResponse:
    """``response`` as a ``ModelInferResponse``; ``raw`` picks ``raw_output_contents``."""
    datatypes = {name: datatype_of(array) for name, array in response.outputs.items()}
    raw = raw or any(datatype not in TYPED_FIELD for datatype in datatypes.values())
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
    )
    encode_parameters(response.parameters, message.parameters)
    for name, array in response.outputs.items():
        tensor = message.outputs.add(name=name, datatype=datatypes[name], shape=array.shape)
        if raw:
            message.raw_output_contents.append(encode_raw(array))
        else:
            _encode_typed(datatypes[name], array, tensor.contents)
    for name, written in response.shared_outputs.items():
        tensor = message.outputs.add(name=name, datatype=written.datatype, shape=written.shape)
        encode_parameters(written.to_parameters(), tensor.parameters)
        if raw:  # an empty entry keeps raw_output_contents aligned with outputs
            message.raw_output_contents.append(b"")
    return message


def _encode_typed(datatype: str, array: np.ndarray, contents: pb.InferTensorContents) -> None:
    flat = array.reshape(-1)
    field = getattr(contents, TYPED_FIELD[datatype])
    if datatype == "BYTES":
        field.extend(
            item if isinstance(item, bytes) else str(item).encode("utf-8") for item in flat
        )
        return
    # In slices: one extend over millions of numbers is a C loop that holds the GIL for
    # hundreds of milliseconds; between slices the event loop gets its turn.
    for start in range(0, len(flat), TYPED_SLICE):
        field.extend(flat[start : start + TYPED_SLICE].tolist())


def encode_parameters(parameters: Parameters, target: Any) -> None:
    """Plain values into a ``map<string, InferParameter>``; values of other types are dropped
    (the protocol has no parameter type for them)."""
    for key, value in parameters.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                target[key].uint64_param = value
            else:
                target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        elif isinstance(value, str):
            target[key].string_param = value


# ---- metadata, configuration, statistics, repository ---------------------------------------


def encode_model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    def tensor(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=spec.name, datatype=spec.datatype, shape=spec.shape
        )

    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=list(metadata.versions),
        platform=metadata.platform,
        inputs=[tensor(spec) for spec in metadata.inputs],
        outputs=[tensor(spec) for spec in metadata.outputs],
    )


def encode_model_config(config: ModelConfig) -> pb.ModelConfigResponse:
    message = pb.ModelConfig(
        name=config.name,
        platform=config.platform,
        backend=config.backend,
        max_batch_size=config.max_batch_size,
    )
    for tensor in config.inputs:
        message.input.add(
            name=tensor.name,
            data_type=pb.DataType.Value(CONFIG_DATATYPES[tensor.datatype]),
            dims=tensor.dims,
        )
    for tensor in config.outputs:
        message.output.add(
            name=tensor.name,
            data_type=pb.DataType.Value(CONFIG_DATATYPES[tensor.datatype]),
            dims=tensor.dims,
        )
    if config.sequence_idle_us is not None:
        message.sequence_batching.max_sequence_idle_microseconds = config.sequence_idle_us
    elif config.dynamic_batching is not None:
        batching = config.dynamic_batching
        message.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_size)
        message.dynamic_batching.max_queue_delay_microseconds = (
            batching.max_queue_delay_microseconds
        )
    if config.decoupled:
        message.model_transaction_policy.decoupled = True
    return pb.ModelConfigResponse(config=message)


def encode_statistics(rows: Sequence[VersionStatistics]) -> pb.ModelStatisticsResponse:
    """The statistics extension's rows as protobuf (Triton's field names)."""
    message = pb.ModelStatisticsResponse()
    for row in rows:
        stats = message.model_stats.add(
            name=row.model,
            version=str(row.version),
            last_inference=row.last_inference_ms,
            inference_count=row.inference_count,
            execution_count=row.execution_count,
        )
        inference = stats.inference_stats
        compute = row.compute_infer
        for field, duration in (
            (inference.success, row.success),
            (inference.fail, row.fail),
            (inference.queue, row.queue),
            (inference.compute_infer, compute),
            (inference.cache_hit, row.cache_hit),
            (inference.cache_miss, row.cache_miss),
        ):
            field.count, field.ns = duration.count, duration.ns
        # Not timed apart from compute_infer; Triton's clients require equal counts.
        inference.compute_input.count = inference.compute_output.count = compute.count
        for size, duration in sorted(row.batch_sizes.items()):
            batch = stats.batch_stats.add(batch_size=size)
            batch.compute_infer.count, batch.compute_infer.ns = duration.count, duration.ns
    return message


def encode_repository_index(rows: Sequence[RepositoryEntry]) -> pb.RepositoryIndexResponse:
    message = pb.RepositoryIndexResponse()
    for row in rows:
        message.models.add(
            name=row.name, version=str(row.version), state=row.state, reason=row.reason
        )
    return message
