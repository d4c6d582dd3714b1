"""scikit-learn: trust rules for skops and pickles, output naming and derived metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from pitstop.errors import InvalidInput, LoadError, PermissionDenied
from tests import model_factory as mf
from tests.runtimes.package import loaded, runtime_for


class Doubler(FunctionTransformer):
    """A custom type: skops does not trust it, and neither does pitstop."""


def _skops_package(folder: Path, model: object, **manifest: object) -> Path:
    import skops.io

    folder.mkdir(parents=True, exist_ok=True)
    skops.io.dump(model, folder / "model.skops")
    return mf.write_manifest(folder, {"runtime": "sklearn", "artifact": "model.skops", **manifest})


@pytest.mark.parametrize("fmt", ["pickle", "joblib"])
def test_pickle_is_refused_without_trust_and_loads_with_it(tmp_path: Path, fmt: str) -> None:
    folder = mf.make_sklearn_package(tmp_path, fmt=fmt)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied, match="--trust-pickle"):
        runtime_for(folder).load()
    result = loaded(folder, trust_pickle=True).predict({"input": mf.iris_rows(5)})
    np.testing.assert_array_equal(result["label"], mf.iris_classifier().predict(mf.iris_rows(5)))


def test_skops_with_an_untrusted_custom_type_is_refused(tmp_path: Path) -> None:
    features = mf.iris_rows(150)
    labels = np.resize(np.array([0, 1, 2]), 150)
    model = make_pipeline(Doubler(), LogisticRegression(max_iter=50)).fit(features, labels)
    folder = _skops_package(tmp_path, model)
    with pytest.raises(PermissionDenied, match=r"Doubler.*--trust-pickle"):
        runtime_for(folder).load()
    assert loaded(folder, trust_pickle=True).predict({"input": features})["label"].shape == (150,)


def test_skops_with_only_sklearn_and_numpy_types_loads(tmp_path: Path) -> None:
    model = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=200))
    model.fit(mf.iris_rows(150), mf._iris()[1])
    folder = _skops_package(tmp_path, model)
    assert loaded(folder).predict({"input": mf.iris_rows(2)})["label"].dtype == np.int64


def test_string_labels_are_bytes(tmp_path: Path) -> None:
    names = np.array(["setosa", "versicolor", "virginica"])[mf._iris()[1]]
    model = LogisticRegression(max_iter=1000).fit(mf.iris_rows(150), names)
    runtime = loaded(_skops_package(tmp_path, model))
    label = next(s for s in runtime.metadata().outputs if s.name == "label")
    assert label.datatype == "BYTES"
    result = runtime.predict({"input": mf.iris_rows(1)})
    assert result["label"].dtype == object
    assert result["label"].tolist() == [b"setosa"]


def test_regressor_gives_prediction_shaped_by_the_model(tmp_path: Path) -> None:
    features = mf.iris_rows(150)
    single = LinearRegression().fit(features, features[:, 0] * 2)
    double = LinearRegression().fit(features, features[:, :2])
    for name, model, shape in (("single", single, (-1,)), ("double", double, (-1, 2))):
        runtime = loaded(_skops_package(tmp_path / name, model))
        (output,) = runtime.metadata().outputs
        assert (output.name, output.datatype, output.shape) == ("prediction", "FP64", shape)
        result = runtime.predict({"input": features[:3]})["prediction"]
        np.testing.assert_allclose(result, model.predict(features[:3]), rtol=1e-6)


def test_declared_outputs_map_to_methods(tmp_path: Path) -> None:
    outputs = [{"name": "scores", "datatype": "FP64", "shape": [-1, 3]}]
    folder = _skops_package(
        tmp_path,
        mf.iris_classifier(),
        outputs=outputs,
        parameters={"methods": {"scores": "decision_function"}},
    )
    result = loaded(folder).predict({"input": mf.iris_rows(4)})
    assert set(result) == {"scores"}
    want = mf.iris_classifier().decision_function(mf.iris_rows(4))
    np.testing.assert_allclose(result["scores"], want, rtol=1e-6)


def test_undeclarable_output_is_a_load_error_naming_it(tmp_path: Path) -> None:
    outputs = [{"name": "embedding", "datatype": "FP32", "shape": [-1, 8]}]
    folder = _skops_package(tmp_path, mf.iris_classifier(), outputs=outputs)
    with pytest.raises(LoadError, match="'embedding'"):
        runtime_for(folder).load()


def test_unknown_format_is_a_load_error(tmp_path: Path) -> None:
    folder = mf.make_sklearn_package(tmp_path)
    with pytest.raises(LoadError, match="onnx"):
        runtime_for(folder, parameters={"format": "onnx"}).load()


def test_nan_input_is_invalid_input(tmp_path: Path) -> None:
    runtime = loaded(mf.make_sklearn_package(tmp_path))
    rows = mf.iris_rows(2)
    rows[1, 2] = np.nan
    with pytest.raises(InvalidInput, match="'input'"):
        runtime.predict({"input": rows})
