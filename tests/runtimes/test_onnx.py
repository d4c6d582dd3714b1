"""ONNX: the manifest must agree with the model; only tensors are served; BYTES round-trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pitstop.errors import LoadError
from tests import model_factory as mf
from tests.runtimes.package import loaded, runtime_for


def _zipmap_package(folder: Path, **manifest: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(mf.iris_onnx_bytes(zipmap=True))
    return mf.write_manifest(folder, {"runtime": "onnx", **manifest})


def test_zipmap_output_is_a_load_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"'output_probability'.*zipmap disabled"):
        runtime_for(_zipmap_package(tmp_path)).load()


def test_zipmap_output_left_out_by_the_manifest_is_not_served(tmp_path: Path) -> None:
    outputs = [{"name": "output_label", "datatype": "INT64", "shape": [-1]}]
    runtime = loaded(_zipmap_package(tmp_path, outputs=outputs))
    result = runtime.predict({"input": mf.iris_rows(3)})
    assert list(result) == ["output_label"]
    np.testing.assert_array_equal(result["output_label"], [0, 0, 0])


@pytest.mark.parametrize(
    ("field", "entry", "fragment"),
    [
        ("inputs", {"name": "features", "datatype": "FP32", "shape": [-1, 4]}, "'features'"),
        ("inputs", {"name": "input", "datatype": "FP64", "shape": [-1, 4]}, "'input'.*FP64"),
        ("inputs", {"name": "input", "datatype": "FP32", "shape": [-1, 5]}, r"'input'.*\[-1, 5\]"),
        ("outputs", {"name": "score", "datatype": "FP32", "shape": [-1]}, "'score'"),
        ("outputs", {"name": "label", "datatype": "INT64", "shape": [-1, 1]}, "'label'"),
    ],
)
def test_manifest_disagreeing_with_the_model_is_a_load_error(
    tmp_path: Path, field: str, entry: dict[str, Any], fragment: str
) -> None:
    folder = mf.make_onnx_package(tmp_path)
    runtime = runtime_for(folder, **{field: (_spec(entry),)})
    with pytest.raises(LoadError, match=fragment):
        runtime.load()


def test_a_declared_subset_of_outputs_is_all_that_is_computed(tmp_path: Path) -> None:
    folder = mf.make_onnx_package(tmp_path)
    runtime = loaded(
        folder, outputs=(_spec({"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}),)
    )
    assert list(runtime.predict({"input": mf.iris_rows(2)})) == ["probabilities"]


def test_string_tensors_are_bytes_on_both_sides(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    tmp_path.mkdir(exist_ok=True)
    onnx.save(model, str(tmp_path / "model.onnx"))
    mf.write_manifest(tmp_path, {"runtime": "onnx"})
    runtime = loaded(tmp_path)
    (spec,) = runtime.metadata().inputs
    assert (spec.name, spec.datatype, spec.shape) == ("text", "BYTES", (-1,))
    result = runtime.predict({"text": np.array([b"caf\xc3\xa9", b"x"], dtype=object)})
    assert result["echo"].dtype == object
    assert result["echo"].tolist() == ["café".encode(), b"x"]


def _spec(entry: dict[str, Any]) -> Any:
    from pitstop.protocol.tensor import TensorSpec

    return TensorSpec(entry["name"], entry["datatype"], tuple(entry["shape"]))
