"""Triton's model-configuration extension: the part of a ``ModelConfig`` its clients read.

``tritonclient`` and ``perf_analyzer`` ask for the configuration before they send load.
perf_analyzer reads ``max_batch_size``: when it is above 0 it drops the first dimension of every
shape in the model metadata and adds its own batch dimension (``-b``); when it is 0 the metadata
shapes are used as they are. So a configuration with ``max_batch_size > 0`` is only reported
when every input and output has a variable first dimension, and its ``dims`` then leave that
dimension out, as Triton's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pitstop.protocol.tensor import TensorSpec

CONFIG_DATATYPES: Final[dict[str, str]] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}
"""V2 datatype → the model configuration's ``DataType`` enum name."""


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0


@dataclass(frozen=True)
class ConfigTensor:
    """One input or output: its V2 datatype and ``dims`` (without the batch dimension when the
    configuration's ``max_batch_size`` is above 0)."""

    name: str
    datatype: str
    dims: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "data_type": CONFIG_DATATYPES[self.datatype],
            "dims": list(self.dims),
        }


@dataclass(frozen=True)
class ModelConfig:
    name: str
    platform: str
    backend: str
    max_batch_size: int
    inputs: tuple[ConfigTensor, ...]
    outputs: tuple[ConfigTensor, ...]
    dynamic_batching: DynamicBatching | None = None
    decoupled: bool = False
    """Triton's decoupled transaction policy: any number of responses per request."""
    sequence_idle_us: int | None = None
    """A stateful model's ``max_sequence_idle_microseconds`` (Triton's sequence batching)."""

    def to_json(self) -> dict[str, Any]:
        """Triton's JSON form (``GET /v2/models/{m}/config``)."""
        body: dict[str, Any] = {
            "name": self.name,
            "platform": self.platform,
            "backend": self.backend,
            "max_batch_size": self.max_batch_size,
            "input": [tensor.to_json() for tensor in self.inputs],
            "output": [tensor.to_json() for tensor in self.outputs],
        }
        if self.decoupled:
            body["model_transaction_policy"] = {"decoupled": True}
        if self.sequence_idle_us is not None:  # Triton's scheduling choice: one or the other
            body["sequence_batching"] = {"max_sequence_idle_microseconds": self.sequence_idle_us}
        elif self.dynamic_batching is not None:
            body["dynamic_batching"] = {
                "preferred_batch_size": list(self.dynamic_batching.preferred_batch_size),
                "max_queue_delay_microseconds": self.dynamic_batching.max_queue_delay_microseconds,
            }
        return body


def model_config(
    name: str,
    platform: str,
    backend: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch_size: int = 0,
    dynamic_batching: DynamicBatching | None = None,
    decoupled: bool = False,
    sequence_idle_us: int | None = None,
) -> ModelConfig:
    """The configuration of a model with these tensors and batching (from the manifest's
    ``batching`` section). ``max_batch_size`` is reported as 0 (and dims in full) when batching
    is off or a tensor has no variable first dimension to batch along.
    """
    specs = [*inputs, *outputs]
    if max_batch_size > 0 and all(spec.shape[:1] == (-1,) for spec in specs):
        skip = 1
    else:
        max_batch_size, skip = 0, 0

    def tensors(group: Sequence[TensorSpec]) -> tuple[ConfigTensor, ...]:
        return tuple(ConfigTensor(s.name, s.datatype, s.shape[skip:]) for s in group)

    return ModelConfig(
        name=name,
        platform=platform,
        backend=backend,
        max_batch_size=max_batch_size,
        inputs=tensors(inputs),
        outputs=tensors(outputs),
        dynamic_batching=(dynamic_batching or DynamicBatching()) if max_batch_size > 0 else None,
        decoupled=decoupled,
        sequence_idle_us=sequence_idle_us,
    )
