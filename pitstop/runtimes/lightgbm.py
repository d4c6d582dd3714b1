"""LightGBM boosters saved in LightGBM's text format (``Booster.save_model``).

The model file is ``context.artifact`` (default ``model.txt``); it is parsed, never unpickled.
The model takes one input, a float32 ``[batch, n_features]`` matrix (without declared inputs:
``input`` FP32 ``[-1, num_feature()]``), and gives one output, ``prediction``: ``[-1]`` for
regression and binary objectives, ``[-1, k]`` for multiclass (the shape and datatype, FP64, are read
from a one-row probe at load time). Predictions use ``num_threads = context.threads``; LightGBM
serialises concurrent predictions on one booster internally, so they are safe but not parallel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from pitstop.errors import LoadError, Unavailable
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata
from pitstop.runtimes.signature import (
    check_supported,
    conform_outputs,
    derived_output,
    feature_matrix,
    framework_call,
    tabular_input,
)

PLATFORM: Final = "lightgbm"
DEFAULT_ARTIFACT: Final = "model.txt"
OUTPUT: Final = "prediction"


@dataclass(frozen=True)
class _Loaded:
    booster: Any
    input: TensorSpec
    n_features: int
    metadata: RuntimeMetadata


class LightGBMRuntime:
    """A ``lightgbm.Booster`` loaded from a text model file."""

    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        import lightgbm

        path = self._context.path / (self._context.artifact or DEFAULT_ARTIFACT)
        if not path.is_file():
            raise LoadError(f"LightGBM model file {path} does not exist")
        threads = self._context.threads
        try:
            # Booster ignores params when reading a model file; threads are passed per call.
            booster = lightgbm.Booster(model_file=str(path))
            n_features = int(booster.num_feature())
            probe = np.asarray(
                booster.predict(np.zeros((1, n_features), np.float32), num_threads=threads)
            )
        except Exception as exc:
            raise LoadError(f"LightGBM cannot load {path.name}: {exc}") from exc
        spec = tabular_input(self._context, n_features, "lightgbm")
        outputs = self._context.outputs or (derived_output(OUTPUT, probe),)
        if [output.name for output in outputs] != [OUTPUT]:
            raise LoadError(
                f"LightGBM models have one output, {OUTPUT!r}; the manifest declares "
                f"{[output.name for output in outputs]}"
            )
        check_supported(outputs)
        self._loaded = _Loaded(
            booster=booster,
            input=spec,
            n_features=n_features,
            metadata=RuntimeMetadata(PLATFORM, (spec,), tuple(outputs)),
        )

    def metadata(self) -> RuntimeMetadata:
        return self._require_loaded().metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._require_loaded()
        features = feature_matrix(inputs, loaded.input, loaded.n_features, np.dtype(np.float32))
        name = loaded.input.name
        with framework_call("LightGBM prediction failed", lambda exc: f"input {name!r}: {exc}"):
            prediction = loaded.booster.predict(features, num_threads=self._context.threads)
        return conform_outputs({OUTPUT: prediction}, loaded.metadata.outputs)

    def unload(self) -> None:
        self._loaded = None

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the LightGBM model is not loaded")
        return loaded
