"""Complete model packages for tests: a folder with a model file and its ``pitstop.yaml``.

Every ``make_*_package(directory)`` trains a tiny model on iris (fixed seeds, well under a second),
writes it and a manifest into ``directory`` (created if missing) and returns ``directory``. The
tabular packages share one interface, so one request fits them all::

    inputs:  input FP32 [-1, 4]          (iris features, see iris_rows)
    sklearn, onnx:     label INT64 [-1], probabilities FP32 [-1, 3]
    xgboost:           prediction FP32 [-1, 3]   (multi:softprob)
    lightgbm:          prediction FP64 [-1, 3]   (multiclass)
    python (default):  x FP32 [-1, 4] -> y FP32 [-1, 4], y = 2 * x

Frameworks are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

MANIFEST = "pitstop.yaml"
IRIS_INPUT: dict[str, Any] = {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
IRIS_WARMUP: list[dict[str, Any]] = [
    {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
]
CLASSIFIER_OUTPUTS: list[dict[str, Any]] = [
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
]
DEFAULT_HANDLER = '''\
import numpy as np


class Model:
    """Doubles its input: y = 2 * x."""

    def predict(self, inputs):
        return {"y": (inputs["x"] * 2).astype(np.float32)}
'''


@functools.cache
def _iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    features, labels = load_iris(return_X_y=True)
    return features.astype(np.float32), labels.astype(np.int64)


def iris_rows(n: int) -> np.ndarray:
    """The first ``n`` iris feature rows (repeating past 150) as a float32 ``[n, 4]`` array."""
    features, _ = _iris()
    return np.resize(features, (n, 4)).astype(np.float32)


@functools.cache
def iris_classifier() -> Any:
    """A ``LogisticRegression`` fitted on iris (labels 0, 1, 2); trained once per process."""
    from sklearn.linear_model import LogisticRegression

    features, labels = _iris()
    return LogisticRegression(max_iter=1000).fit(features.astype(np.float64), labels)


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` as ``directory/pitstop.yaml`` (creating ``directory``); return it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_text(yaml.safe_dump(dict(manifest), sort_keys=False))
    return directory


def make_sklearn_package(
    directory: Path, *, fmt: Literal["skops", "pickle", "joblib"] = "skops"
) -> Path:
    """The iris classifier saved as ``model.skops``, ``model.pkl`` or ``model.joblib``.

    Only ``skops`` loads without ``--trust-pickle``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    model = iris_classifier()
    artifact = {"skops": "model.skops", "pickle": "model.pkl", "joblib": "model.joblib"}[fmt]
    if fmt == "skops":
        import skops.io

        skops.io.dump(model, directory / artifact)
    elif fmt == "joblib":
        import joblib

        joblib.dump(model, directory / artifact)
    else:
        (directory / artifact).write_bytes(pickle.dumps(model))
    return write_manifest(
        directory,
        {
            "runtime": "sklearn",
            "artifact": artifact,
            "inputs": [IRIS_INPUT],
            "outputs": CLASSIFIER_OUTPUTS,
            "parameters": {"format": fmt},
            "warmup": IRIS_WARMUP,
        },
    )


def make_onnx_package(directory: Path) -> Path:
    """The iris classifier converted with skl2onnx (zipmap disabled) as ``model.onnx``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(iris_onnx_bytes(zipmap=False))
    return write_manifest(
        directory,
        {
            "runtime": "onnx",
            "artifact": "model.onnx",
            "inputs": [IRIS_INPUT],
            "outputs": CLASSIFIER_OUTPUTS,
            "parameters": {},
            "warmup": IRIS_WARMUP,
        },
    )


def iris_onnx_bytes(*, zipmap: bool) -> bytes:
    """The iris classifier as a serialised ONNX model.

    Without ZipMap its outputs are ``label`` and ``probabilities``; with it, skl2onnx's own
    ``output_label`` and ``output_probability`` (a sequence of maps, which pitstop refuses).
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType

    model = iris_classifier()
    if zipmap:
        onx = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 4]))])
    else:
        onx = convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, 4]))],
            options={id(model): {"zipmap": False}},
            final_types=[
                ("label", Int64TensorType([None])),
                ("probabilities", FloatTensorType([None, 3])),
            ],
        )
    data: bytes = onx.SerializeToString()
    return data


def make_xgboost_package(directory: Path) -> Path:
    """An XGBoost ``multi:softprob`` booster on iris (10 rounds) saved as ``model.json``."""
    import xgboost

    directory.mkdir(parents=True, exist_ok=True)
    features, labels = _iris()
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(features, label=labels), num_boost_round=10)
    booster.save_model(str(directory / "model.json"))
    return write_manifest(
        directory,
        {
            "runtime": "xgboost",
            "artifact": "model.json",
            "inputs": [IRIS_INPUT],
            "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 3]}],
            "parameters": {},
            "warmup": IRIS_WARMUP,
        },
    )


def make_lightgbm_package(directory: Path) -> Path:
    """A LightGBM multiclass booster on iris (10 rounds) saved as ``model.txt``."""
    import lightgbm

    directory.mkdir(parents=True, exist_ok=True)
    features, labels = _iris()
    params = {
        "objective": "multiclass",
        "num_class": 3,
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "num_threads": 1,
        "deterministic": True,
        "seed": 0,
        "verbose": -1,
    }
    booster = lightgbm.train(params, lightgbm.Dataset(features, label=labels), num_boost_round=10)
    booster.save_model(str(directory / "model.txt"))
    return write_manifest(
        directory,
        {
            "runtime": "lightgbm",
            "artifact": "model.txt",
            "inputs": [IRIS_INPUT],
            "outputs": [{"name": "prediction", "datatype": "FP64", "shape": [-1, 3]}],
            "parameters": {},
            "warmup": IRIS_WARMUP,
        },
    )


def make_python_package(directory: Path, *, source: str | None = None) -> Path:
    """A python-runtime package: ``handler.py`` (``source``, default :data:`DEFAULT_HANDLER`).

    The manifest names the handler ``handler:Model``, declares input ``x`` FP32 ``[-1, 4]`` and
    output ``y`` FP32 ``[-1, 4]``, and needs ``--trust-code`` to load.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(DEFAULT_HANDLER if source is None else source)
    return write_manifest(
        directory,
        {
            "runtime": "python",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
            "parameters": {"handler": "handler:Model"},
            "warmup": [
                {
                    "inputs": [
                        {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
                    ]
                }
            ],
        },
    )


IDENTITY_HANDLER = '''\
class Model:
    """Returns every input as the output of the same name."""

    def predict(self, inputs):
        return dict(inputs)
'''


def make_identity_package(directory: Path, datatypes: Mapping[str, str]) -> Path:
    """A python-runtime package (needs ``--trust-code``) whose outputs are its inputs: one input
    and one output per ``name → datatype`` in ``datatypes``, each of shape ``[-1, -1]``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(IDENTITY_HANDLER)
    tensors = [{"name": n, "datatype": d, "shape": [-1, -1]} for n, d in datatypes.items()]
    return write_manifest(
        directory,
        {
            "runtime": "python",
            "inputs": tensors,
            "outputs": tensors,
            "parameters": {"handler": "handler:Model"},
        },
    )


def push_transport_models(registry: Any, src: Path, batching: Mapping[str, Any]) -> None:
    """The models the gRPC and tritonclient suites serve: ``iris`` (ONNX with ``batching``,
    production), ``spare`` (ONNX, production) and ``py`` (a handler doubling its input as
    production, tripling it as staging)."""
    onnx = make_onnx_package(src / "onnx")
    manifest = yaml.safe_load((onnx / MANIFEST).read_text())
    manifest["batching"] = dict(batching)
    write_manifest(onnx, manifest)
    registry.push(onnx, name="iris", aliases=["production"], actor="test")
    registry.push(make_onnx_package(src / "spare"), name="spare", aliases=["production"],
                  actor="test")  # fmt: skip
    for factor, alias in ((2, "production"), (3, "staging")):
        source = DEFAULT_HANDLER.replace("* 2", f"* {factor}")
        folder = make_python_package(src / f"py{factor}", source=source)
        registry.push(folder, name="py", aliases=[alias], actor="test", trust_code=True)
