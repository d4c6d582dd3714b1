"""Triton model configurations from tensors and a manifest's batching section."""

from __future__ import annotations

from typing import Any

import pytest

from pitstop.protocol.model_config import DynamicBatching, ModelConfig
from pitstop.protocol.model_config import model_config as build
from pitstop.protocol.tensor import TensorSpec
from pitstop.registry.options import BatchingOptions

X = TensorSpec("x", "FP32", (-1, 4))
LABEL = TensorSpec("label", "INT64", (-1,))
FIXED = TensorSpec("fixed", "BYTES", (2, 3))


def model_config(
    name: str,
    platform: str,
    backend: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    section: dict[str, Any] | None,
) -> ModelConfig:
    """As the DataPlane builds it from a manifest's ``batching`` section."""
    options = BatchingOptions.parse(section)
    if options is None:
        return build(name, platform, backend, inputs, outputs)
    dynamic = DynamicBatching(options.preferred_batch_size, options.max_queue_delay_microseconds)
    return build(name, platform, backend, inputs, outputs, options.max_batch_size, dynamic)


@pytest.mark.parametrize(
    ("inputs", "batching", "max_batch_size", "dims"),
    [
        ((X,), None, 0, [(-1, 4), (-1,)]),
        ((X,), {}, 0, [(-1, 4), (-1,)]),
        ((X,), {"max_batch_size": 0}, 0, [(-1, 4), (-1,)]),
        ((X,), {"max_batch_size": 8}, 8, [(4,), ()]),
        # A tensor without a variable first dimension cannot be batched along it.
        ((X, FIXED), {"max_batch_size": 8}, 0, [(-1, 4), (2, 3), (-1,)]),
    ],
)
def test_max_batch_size_and_dims(
    inputs: tuple[TensorSpec, ...],
    batching: dict[str, Any] | None,
    max_batch_size: int,
    dims: list[tuple[int, ...]],
) -> None:
    config = model_config("m", "onnxruntime_onnx", "onnx", inputs, (LABEL,), batching)
    assert config.max_batch_size == max_batch_size
    assert [t.dims for t in (*config.inputs, *config.outputs)] == dims
    assert (config.dynamic_batching is not None) == (max_batch_size > 0)


@pytest.mark.parametrize(
    ("batching", "expected"),
    [
        ({"max_batch_size": 8}, DynamicBatching((), 0)),
        (
            {"max_batch_size": 8, "max_queue_delay_microseconds": 500, "preferred_batch_size": 4},
            DynamicBatching((4,), 500),
        ),
        (
            {"max_batch_size": 8, "max_batch_time": 0.002, "preferred_batch_size": [2, 8]},
            DynamicBatching((2, 8), 2000),  # MLServer's name, in seconds
        ),
    ],
)
def test_dynamic_batching(batching: dict[str, Any], expected: DynamicBatching) -> None:
    config = model_config("m", "p", "b", (X,), (LABEL,), batching)
    assert config.dynamic_batching == expected


def test_json_form_uses_tritons_names() -> None:
    config = model_config("m", "python", "python", (X,), (FIXED,), {"max_batch_size": 0})
    assert config.to_json() == {
        "name": "m",
        "platform": "python",
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 4]}],
        "output": [{"name": "fixed", "data_type": "TYPE_STRING", "dims": [2, 3]}],
    }
