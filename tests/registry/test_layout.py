"""KServe's bare model-file layouts → the manifest pitstop pushes for them."""

from __future__ import annotations

from typing import Any

import pytest

from pitstop.errors import InvalidInput
from pitstop.registry.layout import manifest_of


@pytest.mark.parametrize(
    ("names", "model_format", "expected"),
    [
        (["model.onnx"], None, {"runtime": "onnx", "artifact": "model.onnx"}),
        (["resnet.onnx", "README.md"], None, {"runtime": "onnx", "artifact": "resnet.onnx"}),
        (["model.onnx"], "onnx", {"runtime": "onnx", "artifact": "model.onnx"}),
        (["model.joblib"], None,
         {"runtime": "sklearn", "artifact": "model.joblib", "parameters": {"format": "joblib"}}),
        (["model.pkl"], "sklearn",
         {"runtime": "sklearn", "artifact": "model.pkl", "parameters": {"format": "pickle"}}),
        (["model.skops", "model.joblib"], None,
         {"runtime": "sklearn", "artifact": "model.skops", "parameters": {"format": "skops"}}),
        (["model.json"], None, {"runtime": "xgboost", "artifact": "model.json"}),
        (["model.ubj"], "xgboost", {"runtime": "xgboost", "artifact": "model.ubj"}),
        (["model.bst"], None, {"runtime": "lightgbm", "artifact": "model.bst"}),
        (["model.txt"], "lightgbm", {"runtime": "lightgbm", "artifact": "model.txt"}),
        (["model.onnx", "model.txt"], "onnx", {"runtime": "onnx", "artifact": "model.onnx"}),
    ],
)  # fmt: skip
def test_a_bare_model_file_decides_the_runtime(
    names: list[str], model_format: str | None, expected: dict[str, Any]
) -> None:
    assert manifest_of(names, model_format) == expected


@pytest.mark.parametrize(
    ("names", "model_format", "message"),
    [
        ([], None, "among: nothing"),
        (["weights.h5"], None, "among: weights.h5"),
        (["a.onnx", "b.onnx"], None, "among: a.onnx, b.onnx"),
        (["model.onnx", "model.joblib"], None, "several formats (onnx, sklearn)"),
        (["model.bst"], "xgboost", "legacy binary XGBoost"),
        (["model.onnx"], "sklearn", "the sklearn model file"),
        (["model.pt"], "pytorch", "model format 'pytorch'"),
    ],
)
def test_what_cannot_be_decided_is_refused_naming_the_files(
    names: list[str], model_format: str | None, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        manifest_of(names, model_format)
