"""MLflow model folders: flavors, signatures and input examples become a manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitstop.errors import InvalidInput
from pitstop.protocol.tensor import TensorSpec
from pitstop.registry import read_manifest

COLUMNS = [
    {"name": "a", "type": "double"},
    {"name": "b", "type": "float"},
    {"name": "c", "type": "long"},
]
TENSOR = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]


def mlflow_folder(
    tmp_path: Path,
    flavors: dict[str, Any],
    files: dict[str, bytes],
    signature: dict[str, Any] | None = None,
    example: tuple[dict[str, Any], Any] | None = None,
) -> Path:
    mlmodel: dict[str, Any] = {"flavors": {"python_function": {"loader_module": "x"}, **flavors}}
    if signature is not None:
        mlmodel["signature"] = {side: json.dumps(spec) for side, spec in signature.items()}
    if example is not None:
        info, body = example
        mlmodel["saved_input_example_info"] = info
        (tmp_path / info["artifact_path"]).write_text(json.dumps(body))
    (tmp_path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return tmp_path


def test_onnx_is_preferred_and_named_tensors_map_one_to_one(tmp_path: Path) -> None:
    folder = mlflow_folder(
        tmp_path,
        {"onnx": {"data": "model.onnx"}, "sklearn": {"pickled_model": "model.pkl"}},
        {"model.onnx": b"o", "model.pkl": b"p"},
        signature={
            "inputs": [{"name": "features", **TENSOR[0]}, {"name": "mask", **TENSOR[0]}],
            "outputs": [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}],
        },
    )
    manifest = read_manifest(folder)
    assert (manifest.runtime, manifest.artifact, manifest.source_format) == (
        "onnx", "model.onnx", "mlflow",
    )  # fmt: skip
    assert manifest.inputs == (
        TensorSpec("features", "FP32", (-1, 4)),
        TensorSpec("mask", "FP32", (-1, 4)),
    )
    # An unnamed signature tensor cannot be matched to the ONNX graph: the runtime reads the
    # model's own outputs instead.
    assert manifest.outputs == ()


UNNAMED_LABELS = [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]


def test_mlflow3_lightgbm_estimator_is_served_by_the_sklearn_runtime(tmp_path: Path) -> None:
    # What MLflow 3 writes for lightgbm.LGBMClassifier: a skops file, not a booster text file.
    folder = mlflow_folder(
        tmp_path,
        {
            "lightgbm": {
                "data": "model.skops",
                "serialization_format": "skops",
                "model_class": "lightgbm.sklearn.LGBMClassifier",
            }
        },
        {"model.skops": b"s"},
        signature={"inputs": COLUMNS, "outputs": UNNAMED_LABELS},
    )
    manifest = read_manifest(folder)
    assert (manifest.runtime, manifest.artifact) == ("sklearn", "model.skops")
    assert manifest.parameters == {"format": "skops"}
    assert manifest.inputs == (TensorSpec("input", "FP64", (-1, 3)),)
    assert manifest.outputs == (TensorSpec("prediction", "INT64", (-1,)),)


def test_unnamed_signature_tensors_take_the_runtime_names(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    sklearn = mlflow_folder(
        tmp_path / "s",
        {"sklearn": {"pickled_model": "model.pkl", "serialization_format": "cloudpickle"}},
        {"model.pkl": b"p"},
        signature={"inputs": TENSOR, "outputs": UNNAMED_LABELS},
    )
    manifest = read_manifest(sklearn)
    assert manifest.inputs == (TensorSpec("input", "FP32", (-1, 4)),)
    assert manifest.outputs == (TensorSpec("prediction", "INT64", (-1,)),)
    (tmp_path / "x").mkdir()
    xgb = mlflow_folder(
        tmp_path / "x",
        {"xgboost": {"data": "model.ubj", "model_format": "ubj"}},
        {"model.ubj": b"x"},
        signature={"inputs": COLUMNS, "outputs": UNNAMED_LABELS},
    )
    manifest = read_manifest(xgb)
    assert manifest.inputs == (TensorSpec("input", "FP64", (-1, 3)),)
    assert manifest.outputs == ()  # the booster's own prediction, read by the runtime


@pytest.mark.parametrize(
    ("serialization", "model_format"),
    [("cloudpickle", "pickle"), ("pickle", "pickle"), ("skops", "skops"), (None, "pickle")],
)
def test_sklearn_serialization_formats(
    tmp_path: Path, serialization: str | None, model_format: str
) -> None:
    flavor: dict[str, Any] = {"pickled_model": "model.bin"}
    if serialization is not None:
        flavor["serialization_format"] = serialization
    manifest = read_manifest(mlflow_folder(tmp_path, {"sklearn": flavor}, {"model.bin": b"m"}))
    assert (manifest.runtime, manifest.artifact) == ("sklearn", "model.bin")
    assert manifest.parameters == {"format": model_format}


def test_unknown_sklearn_serialization_is_refused(tmp_path: Path) -> None:
    flavor = {"pickled_model": "model.bin", "serialization_format": "joblib"}
    folder = mlflow_folder(tmp_path, {"sklearn": flavor}, {"model.bin": b"m"})
    with pytest.raises(InvalidInput, match=re.escape("flavors.sklearn.serialization_format")):
        read_manifest(folder)


def test_xgboost_and_lightgbm(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    xgb = mlflow_folder(
        tmp_path / "x",
        {"xgboost": {"data": "model.ubj", "model_format": "ubj"}, "lightgbm": {"data": "m.lgb"}},
        {"model.ubj": b"x", "m.lgb": b"l"},
    )
    manifest = read_manifest(xgb)
    assert (manifest.runtime, manifest.artifact) == ("xgboost", "model.ubj")
    assert manifest.parameters == {"model_format": "ubj"}
    (tmp_path / "l").mkdir()
    lgb = mlflow_folder(tmp_path / "l", {"lightgbm": {"data": "m.lgb"}}, {"m.lgb": b"l"})
    assert read_manifest(lgb).runtime == "lightgbm"


def test_column_signature_becomes_one_widest_tensor(tmp_path: Path) -> None:
    folder = mlflow_folder(
        tmp_path,
        {"sklearn": {"pickled_model": "model.pkl"}},
        {"model.pkl": b"p"},
        signature={"inputs": COLUMNS, "outputs": [{"type": "long"}]},
    )
    manifest = read_manifest(folder)
    assert manifest.inputs == (TensorSpec("input", "FP64", (-1, 3)),)
    # One unnamed column out is one value per row, named as the runtime's predict() output
    # (MLflow 3 writes this signature for every scikit-learn model; it used to be refused).
    assert manifest.outputs == (TensorSpec("prediction", "INT64", (-1,)),)
    assert manifest.columns == ("a", "b", "c")


def test_pyfunc_is_served_by_mlflow_with_its_requirements_reported(tmp_path: Path) -> None:
    folder = mlflow_folder(
        tmp_path,
        {"python_function": {"loader_module": "mlflow.pyfunc.model", "python_model": "m.pkl"}},
        {"m.pkl": b"p", "requirements.txt": b"mlflow==3.1.0\n# a comment\n-r other.txt\nnumpy\n"},
        signature={"inputs": COLUMNS, "outputs": [{"type": "double"}]},
    )
    manifest = read_manifest(folder)
    assert (manifest.runtime, manifest.artifact) == ("pyfunc", "m.pkl")
    assert manifest.parameters == {
        "loader_module": "mlflow.pyfunc.model",
        "requirements": ["mlflow==3.1.0", "numpy"],
    }
    assert manifest.outputs == (TensorSpec("prediction", "FP64", (-1,)),)


def test_xgboost_classifiers_answer_labels_like_their_pyfunc(tmp_path: Path) -> None:
    flavor = {"data": "model.ubj", "model_format": "ubj"}
    for model_class, predict in [
        ("xgboost.sklearn.XGBClassifier", {"predict": "label"}),
        ("xgboost.sklearn.XGBRegressor", {}),
        ("xgboost.core.Booster", {}),
    ]:
        folder = tmp_path / model_class
        folder.mkdir()
        mlflow_folder(
            folder, {"xgboost": {**flavor, "model_class": model_class}}, {"model.ubj": b"x"}
        )
        assert read_manifest(folder).parameters == {"model_format": "ubj", **predict}


@pytest.mark.parametrize(
    ("types", "datatype"),
    [
        (["integer", "long"], "INT64"),
        (["float", "integer"], "FP32"),
        (["float", "long"], "FP64"),
        (["boolean"], "BOOL"),
        (["string", "string"], "BYTES"),
    ],
)
def test_widest_column_type(tmp_path: Path, types: list[str], datatype: str) -> None:
    columns = [{"name": f"c{i}", "type": kind} for i, kind in enumerate(types)]
    folder = mlflow_folder(
        tmp_path, {"onnx": {"data": "m.onnx"}}, {"m.onnx": b"o"}, signature={"inputs": columns}
    )
    assert read_manifest(folder).inputs[0].datatype == datatype


def test_mixed_string_and_numeric_columns_are_refused(tmp_path: Path) -> None:
    columns = [{"name": "a", "type": "string"}, {"name": "b", "type": "double"}]
    folder = mlflow_folder(
        tmp_path, {"onnx": {"data": "m.onnx"}}, {"m.onnx": b"o"}, signature={"inputs": columns}
    )
    with pytest.raises(
        InvalidInput, match=re.escape("MLmodel: signature.inputs: mixes string and numeric")
    ):
        read_manifest(folder)


def test_dataframe_example_becomes_a_warmup_request(tmp_path: Path) -> None:
    info = {"artifact_path": "input_example.json", "type": "dataframe", "pandas_orient": "split"}
    body = {"columns": ["a", "b", "c"], "data": [[1.0, 2.0, 3], [4.0, 5.0, 6]]}
    folder = mlflow_folder(
        tmp_path,
        {"sklearn": {"pickled_model": "model.pkl", "serialization_format": "skops"}},
        {"model.pkl": b"p"},
        signature={"inputs": COLUMNS},
        example=(info, body),
    )
    assert read_manifest(folder).warmup == (
        {"inputs": [{"name": "input", "datatype": "FP64", "shape": [2, 3], "data": body["data"]}]},
    )


def test_tensor_example_in_inputs_form(tmp_path: Path) -> None:
    info = {"artifact_path": "input_example.json", "type": "ndarray", "format": "tf-serving"}
    folder = mlflow_folder(
        tmp_path,
        {"sklearn": {"pickled_model": "m.skops", "serialization_format": "skops"}},
        {"m.skops": b"s"},
        signature={"inputs": TENSOR},
        example=(info, {"inputs": [[1, 2, 3, 4]]}),
    )
    (example,) = read_manifest(folder).warmup
    assert example["inputs"][0] == {
        "name": "input", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2, 3, 4]],
    }  # fmt: skip


def test_example_that_does_not_fit_is_dropped(tmp_path: Path) -> None:
    info = {"artifact_path": "input_example.json", "type": "ndarray"}
    folder = mlflow_folder(
        tmp_path,
        {"onnx": {"data": "m.onnx"}},
        {"m.onnx": b"o"},
        signature={"inputs": TENSOR},
        example=(info, {"inputs": [[1, 2, 3]]}),  # 3 columns, the model takes 4
    )
    assert read_manifest(folder).warmup == ()


def test_other_flavors_are_served_through_their_pyfunc(tmp_path: Path) -> None:
    folder = mlflow_folder(tmp_path, {"pytorch": {"model_data": "data"}}, {})
    manifest = read_manifest(folder)  # the helper adds python_function with loader_module x
    assert (manifest.runtime, manifest.artifact) == ("pyfunc", None)
    assert manifest.parameters == {"loader_module": "x"}


def test_no_supported_flavor(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"pytorch": {"a": 1}}}))
    with pytest.raises(InvalidInput, match=r"MLmodel: flavors: no supported flavor in \['pyt"):
        read_manifest(tmp_path)


def test_flavor_file_must_exist(tmp_path: Path) -> None:
    folder = mlflow_folder(tmp_path, {"onnx": {"data": "model.onnx"}}, {})
    with pytest.raises(
        InvalidInput, match=re.escape("MLmodel: artifact: file 'model.onnx' not found")
    ):
        read_manifest(folder)


def test_pitstop_yaml_wins_over_mlmodel(tmp_path: Path) -> None:
    folder = mlflow_folder(tmp_path, {"onnx": {"data": "model.onnx"}}, {"model.onnx": b"o"})
    (folder / "pitstop.yaml").write_text("runtime: python\n")
    assert read_manifest(folder).runtime == "python"
