"""Tensors, tensor metadata, and inference requests/responses as plain data.

Arrays are numpy arrays; BYTES tensors are object arrays of ``bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitstop.errors import InvalidInput
from pitstop.protocol.datatype import DATATYPES
from pitstop.protocol.shared_memory import SharedInput, SharedOutput

Parameters = Mapping[str, Any]
"""Free-form request/response parameters (JSON scalars)."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, datatype and shape of a model input or output; ``-1`` marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise InvalidInput(f"tensor {self.name!r}: unknown datatype {self.datatype!r}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """True when ``shape`` fits this spec (same rank; fixed dimensions equal)."""
        if len(shape) != len(self.shape):
            return False
        for want, got in zip(self.shape, shape, strict=True):  # a loop: this is the hot path
            if want != -1 and want != got:
                return False
        return True


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for, with its per-output parameters."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: named input arrays plus the protocol's extra fields."""

    inputs: Mapping[str, np.ndarray]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: Sequence[RequestedOutput] = ()
    input_datatypes: Mapping[str, str] = field(default_factory=dict)
    """The datatype each input was declared with on the wire (``FP32``, ``BYTES``, ...)."""
    shared_inputs: Mapping[str, SharedInput] = field(default_factory=dict)
    """Inputs whose data is in a shared-memory region, not yet read (the transport reads them
    into ``inputs`` before the request is served)."""


@dataclass(frozen=True)
class InferResponse:
    """An inference result: named output arrays, ready for a codec to encode."""

    model_name: str
    model_version: str
    outputs: Mapping[str, np.ndarray]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    output_parameters: Mapping[str, Parameters] = field(default_factory=dict)
    """Per-output parameters from the request (e.g. ``binary_data``), for the codec."""
    shared_outputs: Mapping[str, SharedOutput] = field(default_factory=dict)
    """Outputs already written to shared memory: the codecs describe them, with no data, after
    the others."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the model metadata endpoint returns."""

    name: str
    versions: Sequence[str]
    platform: str
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    parameters: Parameters = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
        }
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body
