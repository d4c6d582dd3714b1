"""Models the benchmarks serve, built locally with fixed seeds (no downloads).

- ``tiny``: a 20-feature logistic regression (scikit-learn), as a skops package for pitstop's
  sklearn runtime, an ONNX package, and a joblib file with model-settings for MLServer.
- ``mlp``: a ~1 ms-per-call ONNX multi-layer perceptron, where batching pays.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

FEATURES = 20


def tiny_classifier() -> Any:
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=2000, n_features=FEATURES, random_state=0)
    return LogisticRegression(max_iter=500).fit(x.astype(np.float32), y)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, FEATURES), dtype=np.float32)


CLASSIFIER_OUTPUTS = [
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
]


def _manifest(
    folder: Path, runtime: str, outputs: list[dict[str, Any]], batching: dict[str, Any] | None
) -> Path:
    document: dict[str, Any] = {
        "runtime": runtime,
        "artifact": "model.skops" if runtime == "sklearn" else "model.onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": outputs,
    }
    if batching:
        document["batching"] = batching
    example = {"name": "x", "datatype": "FP32", "shape": [1, FEATURES]}
    document["warmup"] = [{"inputs": [{**example, "data": rows(1)[0].round(4).tolist()}]}]
    (folder / "pitstop.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def tiny_sklearn_package(folder: Path, model: Any, batching: dict[str, Any] | None = None) -> Path:
    import skops.io

    folder.mkdir(parents=True, exist_ok=True)
    skops.io.dump(model, folder / "model.skops")
    return _manifest(folder, "sklearn", CLASSIFIER_OUTPUTS, batching)


def tiny_onnx_package(folder: Path, model: Any, batching: dict[str, Any] | None = None) -> Path:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    folder.mkdir(parents=True, exist_ok=True)
    onnx_model = to_onnx(
        model,
        initial_types=[("x", FloatTensorType([None, FEATURES]))],
        options={id(model): {"zipmap": False}},
        target_opset=17,
    )
    (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
    return _manifest(folder, "onnx", CLASSIFIER_OUTPUTS, batching)


def mlp_onnx_package(folder: Path, batching: dict[str, Any] | None = None) -> Path:
    """A 20 → 2048 → 2048 → 2048 → 2 MLP with random weights (~1 ms per single-row call)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = [FEATURES, 2048, 2048, 2048, 2]
    nodes, initializers = [], []
    previous = "x"
    for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{layer}"))
        out = f"h{layer}" if layer < len(sizes) - 2 else "logits"
        nodes.append(helper.make_node("MatMul", [previous, f"w{layer}"], [f"m{layer}"]))
        if layer < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [f"m{layer}"], [out]))
        else:
            nodes.append(helper.make_node("Identity", [f"m{layer}"], [out]))
        previous = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    return _manifest(
        folder, "onnx", [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}], batching
    )


def mlserver_model(folder: Path, model: Any, adaptive_batching: bool) -> Path:
    """The same classifier as an MLServer model folder (joblib + model-settings.json)."""
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    settings: dict[str, Any] = {
        "name": "tiny",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    if adaptive_batching:
        settings["max_batch_size"] = 64
        settings["max_batch_time"] = 0.001
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder
