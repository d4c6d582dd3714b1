"""ONNX models on onnxruntime (CPU).

The model file is ``context.artifact`` (default ``model.onnx``). The session uses
``context.threads`` intra-op threads and one inter-op thread: pitstop runs requests in parallel
itself, so one call should not also fan out across operators.

Inputs and outputs come from the session unless the manifest declares them; declared tensors must
agree with the model (inputs: the same names; outputs: a subset of the model's; datatypes, ranks
and fixed dimensions as in the model) or loading fails with :class:`LoadError` naming the tensor.
Only tensor outputs are served: a sequence or map output (skl2onnx's ZipMap) is a
:class:`LoadError` unless the manifest's outputs leave it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from pitstop.errors import InvalidInput, LoadError, Unavailable
from pitstop.protocol.datatype import NUMPY_DTYPES
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata, require_input
from pitstop.runtimes.signature import cast_input, conform_outputs, framework_call

PLATFORM: Final = "onnxruntime_onnx"
DEFAULT_ARTIFACT: Final = "model.onnx"

_ELEMENT_TYPES: Final[dict[str, str]] = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint64)": "UINT64",
    "tensor(uint32)": "UINT32",
    "tensor(uint16)": "UINT16",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
"""onnxruntime's type strings → V2 datatypes. Others (bfloat16, complex, ...) are not served."""


@dataclass(frozen=True)
class _Feed:
    """How one model input is fed: its spec as the model sees it and the dtype onnxruntime wants."""

    spec: TensorSpec
    dtype: np.dtype[np.generic]


@dataclass(frozen=True)
class _Loaded:
    session: Any
    feeds: tuple[_Feed, ...]
    metadata: RuntimeMetadata
    invalid_argument: type[Exception]


class OnnxRuntime:
    """An ONNX model in an onnxruntime ``InferenceSession``, whose ``run`` is thread-safe."""

    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        import onnxruntime as ort

        path = self._context.path / (self._context.artifact or DEFAULT_ARTIFACT)
        if not path.is_file():
            raise LoadError(f"ONNX model file {path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._context.threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise LoadError(f"onnxruntime cannot load {path}: {exc}") from exc

        model_inputs = [_model_spec(arg, "input") for arg in session.get_inputs()]
        model_outputs = {arg.name: arg for arg in session.get_outputs()}
        # Outputs the manifest leaves out are never computed, nor need they be tensors.
        served = [spec.name for spec in self._context.outputs] or list(model_outputs)
        outputs = []
        for name in served:
            arg = model_outputs.get(name)
            if arg is None:
                raise LoadError(
                    f"output {name!r} is declared in the manifest but the ONNX model has no such "
                    f"output; its outputs are {sorted(model_outputs)}"
                )
            outputs.append(_model_spec(arg, "output"))
        inputs = _agreed_inputs(model_inputs, self._context.inputs)
        if self._context.outputs:
            _check_agreement(outputs, self._context.outputs, "output")
            outputs = list(self._context.outputs)
        feeds = tuple(_Feed(spec, _onnx_dtype(spec)) for spec in model_inputs)
        self._loaded = _Loaded(
            session=session,
            feeds=feeds,
            metadata=RuntimeMetadata(PLATFORM, tuple(inputs), tuple(outputs)),
            invalid_argument=ort.capi.onnxruntime_pybind11_state.InvalidArgument,
        )

    def metadata(self) -> RuntimeMetadata:
        return self._require_loaded().metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._require_loaded()
        feed = _feed(loaded, inputs)
        specs = loaded.metadata.outputs
        with framework_call(
            "onnxruntime failed",
            lambda exc: _blame(str(exc), list(feed)),
            refusals=(loaded.invalid_argument,),
        ):
            values = loaded.session.run([spec.name for spec in specs], feed)
        return conform_outputs(dict(zip((s.name for s in specs), values, strict=True)), specs)

    def session_feeds(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        return [_feed(self._require_loaded(), inputs)]

    def unload(self) -> None:
        self._loaded = None

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the ONNX model is not loaded")
        return loaded


def _feed(loaded: _Loaded, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    feed: dict[str, np.ndarray] = {}
    for item in loaded.feeds:
        array = cast_input(require_input(inputs, item.spec.name), item.spec.name, item.dtype)
        if not item.spec.accepts_shape(array.shape):
            raise InvalidInput(
                f"input {item.spec.name!r}: shape {list(array.shape)} does not fit "
                f"the model's {list(item.spec.shape)}"
            )
        feed[item.spec.name] = array
    return feed


def _model_spec(arg: Any, role: str) -> TensorSpec:
    """The V2 spec of an onnxruntime ``NodeArg``; :class:`LoadError` if pitstop cannot serve it."""
    name: str = arg.name
    type_name: str = arg.type
    if not type_name.startswith("tensor("):
        message = f"{role} {name!r} has non-tensor type {type_name}; pitstop serves only tensors"
        if role == "output":
            message += (
                ". If it is a skl2onnx ZipMap, re-export the model with zipmap disabled"
                " (options={'zipmap': False})"
            )
        raise LoadError(message)
    datatype = _ELEMENT_TYPES.get(type_name)
    if datatype is None:
        raise LoadError(f"{role} {name!r} has element type {type_name}, which pitstop cannot serve")
    shape = arg.shape
    if shape is None:
        raise LoadError(f"{role} {name!r} has no static rank; pitstop needs one")
    # Symbolic (str) and unknown (None) dimensions are variable.
    dims = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in shape)
    return TensorSpec(name, datatype, dims)


def _agreed_inputs(model: list[TensorSpec], declared: tuple[TensorSpec, ...]) -> list[TensorSpec]:
    """The inputs to publish: the declared ones if they agree with the model's, else the model's."""
    if not declared:
        return model
    model_names = {spec.name for spec in model}
    declared_names = {spec.name for spec in declared}
    for name in sorted(model_names ^ declared_names):
        where = "in the manifest but not in" if name in declared_names else "by"
        raise LoadError(
            f"input {name!r} is declared {where} the ONNX model; "
            f"the model's inputs are {sorted(model_names)}"
        )
    _check_agreement(model, declared, "input")
    return list(declared)


def _check_agreement(model: list[TensorSpec], declared: tuple[TensorSpec, ...], role: str) -> None:
    by_name = {spec.name: spec for spec in model}
    for spec in declared:
        actual = by_name[spec.name]
        if spec.datatype != actual.datatype:
            raise LoadError(
                f"{role} {spec.name!r} is declared {spec.datatype}, but the ONNX model has "
                f"{actual.datatype}"
            )
        fits = len(spec.shape) == len(actual.shape) and all(
            -1 in (want, have) or want == have
            for want, have in zip(spec.shape, actual.shape, strict=True)
        )
        if not fits:
            raise LoadError(
                f"{role} {spec.name!r} is declared with shape {list(spec.shape)}, but the ONNX "
                f"model has {list(actual.shape)}"
            )


def _onnx_dtype(spec: TensorSpec) -> np.dtype[np.generic]:
    # onnxruntime takes str arrays for tensor(string).
    return np.dtype(str) if spec.datatype == "BYTES" else NUMPY_DTYPES[spec.datatype]


def _blame(message: str, names: list[str]) -> str:
    """onnxruntime's INVALID_ARGUMENT message, prefixed with the input it mentions if any."""
    detail = message.split(" : ", 2)[-1].strip()
    for name in names:
        if f"input: {name}" in message or f"'{name}'" in message:
            return f"input {name!r}: {detail}"
    return f"inputs {', '.join(repr(n) for n in names)}: {detail}"
