"""XGBoost boosters saved with ``Booster.save_model`` as JSON (``.json``) or UBJSON (``.ubj``).

The model file is ``context.artifact`` (default ``model.json``). The legacy binary format and
pickles are refused: XGBoost deprecated the former, and the latter runs code when loaded.

The model takes one input, a float32 ``[batch, n_features]`` matrix (without declared inputs:
``input`` FP32 ``[-1, num_features]``), and gives one output, ``prediction``: ``[-1]`` for
regression and binary objectives, ``[-1, k]`` for ``multi:softprob`` and multi-target models (the
shape is read from a one-row probe at load time). Predictions use ``inplace_predict``, which is
thread-safe, with ``nthread = context.threads``.

``parameters.predict: label`` makes ``prediction`` the class label, as the scikit-learn API's
``XGBClassifier.predict`` (and so MLflow's pyfunc) returns it: ``p > 0.5`` for one probability
column, the index of the largest otherwise (INT64 ``[-1]``). The default, ``raw``, is the
booster's output. MLflow folders of ``XGBClassifier`` models get ``label``.
"""

from __future__ import annotations

import json
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

PLATFORM: Final = "xgboost"
DEFAULT_ARTIFACT: Final = "model.json"
OUTPUT: Final = "prediction"
SUFFIXES: Final = frozenset({".json", ".ubj"})
PREDICT_MODES: Final = ("raw", "label")


@dataclass(frozen=True)
class _Loaded:
    booster: Any
    input: TensorSpec
    n_features: int
    metadata: RuntimeMetadata
    labels: str | None
    """The booster's objective when ``prediction`` is the class label, else None."""


class XGBoostRuntime:
    """An ``xgboost.Booster``; concurrent predictions share it without a lock."""

    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        import xgboost

        mode = self._context.parameters.get("predict", "raw")
        if mode not in PREDICT_MODES:
            raise LoadError(
                f"parameters.predict: {mode!r} is not one of {', '.join(PREDICT_MODES)}"
            )
        path = self._context.path / (self._context.artifact or DEFAULT_ARTIFACT)
        if path.suffix not in SUFFIXES:
            raise LoadError(
                f"XGBoost model {path.name}: only JSON (.json) and UBJSON (.ubj) models are "
                "served, not the legacy binary format or pickles; re-save it with "
                "booster.save_model('model.json')"
            )
        if not path.is_file():
            raise LoadError(f"XGBoost model file {path} does not exist")
        try:
            booster = xgboost.Booster(model_file=str(path))
            booster.set_param({"nthread": self._context.threads})
            n_features = int(booster.num_features())
            probe = np.asarray(booster.inplace_predict(np.zeros((1, n_features), np.float32)))
        except Exception as exc:
            raise LoadError(f"XGBoost cannot load {path.name}: {exc}") from exc
        spec = tabular_input(self._context, n_features, "xgboost")
        objective = _objective(booster) if mode == "label" else None
        if objective is not None:
            probe = _labels(probe, objective)
        outputs = self._context.outputs or (derived_output(OUTPUT, probe),)
        if [output.name for output in outputs] != [OUTPUT]:
            raise LoadError(
                f"XGBoost models have one output, {OUTPUT!r}; the manifest declares "
                f"{[output.name for output in outputs]}"
            )
        check_supported(outputs)
        self._loaded = _Loaded(
            booster=booster,
            input=spec,
            n_features=n_features,
            metadata=RuntimeMetadata(PLATFORM, (spec,), tuple(outputs)),
            labels=objective,
        )

    def metadata(self) -> RuntimeMetadata:
        return self._require_loaded().metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._require_loaded()
        features = feature_matrix(inputs, loaded.input, loaded.n_features, np.dtype(np.float32))
        name = loaded.input.name
        with framework_call("XGBoost prediction failed", lambda exc: f"input {name!r}: {exc}"):
            prediction = loaded.booster.inplace_predict(features)
        if loaded.labels is not None:
            prediction = _labels(np.asarray(prediction), loaded.labels)
        return conform_outputs({OUTPUT: prediction}, loaded.metadata.outputs)

    def unload(self) -> None:
        self._loaded = None

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the XGBoost model is not loaded")
        return loaded


def _objective(booster: Any) -> str:
    try:
        config = json.loads(booster.save_config())
        return str(config["learner"]["objective"]["name"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"parameters.predict: label: cannot read the objective: {exc}") from exc


def _labels(scores: np.ndarray, objective: str) -> np.ndarray:
    """Class labels from a classifier booster's output, as ``XGBClassifier.predict`` gives
    them: ``multi:softmax`` already answers labels; one score per row is a probability (a
    margin for ``binary:logitraw``); several are per-class probabilities."""
    if objective == "multi:softmax":
        return np.asarray(scores, dtype=np.int64)
    if scores.ndim == 1 or scores.shape[-1] == 1:
        threshold = 0.0 if objective == "binary:logitraw" else 0.5
        return (scores.reshape(len(scores)) > threshold).astype(np.int64)
    return np.asarray(np.argmax(scores, axis=-1), dtype=np.int64)
