"""XGBoost: only JSON/UBJ models; output shapes follow the objective."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xgboost

from pitstop.errors import LoadError
from tests import model_factory as mf
from tests.runtimes.package import loaded, runtime_for


def test_ubj_loads_like_json(tmp_path: Path) -> None:
    folder = mf.make_xgboost_package(tmp_path)
    booster = xgboost.Booster(model_file=str(folder / "model.json"))
    booster.save_model(str(folder / "model.ubj"))
    rows = {"input": mf.iris_rows(4)}
    from_json = loaded(folder).predict(rows)["prediction"]
    from_ubj = loaded(folder, artifact="model.ubj").predict(rows)["prediction"]
    np.testing.assert_array_equal(from_json, from_ubj)


@pytest.mark.parametrize("name", ["model.bin", "model.pkl", "model.deprecated"])
def test_legacy_formats_are_refused(tmp_path: Path, name: str) -> None:
    folder = mf.make_xgboost_package(tmp_path)
    shutil.copy(folder / "model.json", folder / name)
    with pytest.raises(LoadError, match="JSON"):
        runtime_for(folder, artifact=name).load()


def test_binary_objective_gives_one_column(tmp_path: Path) -> None:
    features = mf.iris_rows(150)
    labels = (np.arange(150) >= 50).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": 2, "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(features, label=labels), num_boost_round=3)
    tmp_path.mkdir(exist_ok=True)
    booster.save_model(str(tmp_path / "model.json"))
    runtime = loaded(mf.write_manifest(tmp_path, {"runtime": "xgboost"}))
    (output,) = runtime.metadata().outputs
    assert (output.name, output.datatype, output.shape) == ("prediction", "FP32", (-1,))
    assert runtime.predict({"input": features[:5]})["prediction"].shape == (5,)


def test_outputs_other_than_prediction_are_a_load_error(tmp_path: Path) -> None:
    folder = mf.make_xgboost_package(tmp_path)
    from pitstop.protocol.tensor import TensorSpec

    with pytest.raises(LoadError, match="'prediction'"):
        runtime_for(folder, outputs=(TensorSpec("label", "INT64", (-1,)),)).load()


@pytest.mark.parametrize("objective", ["binary:logistic", "multi:softprob", "multi:softmax"])
def test_label_mode_answers_what_xgbclassifier_predict_does(tmp_path: Path, objective: str) -> None:
    features = mf.iris_rows(150)
    classes = 2 if objective.startswith("binary") else 3
    labels = np.arange(150) * classes // 150
    model = xgboost.XGBClassifier(n_estimators=3, max_depth=2, objective=objective)
    model.fit(features, labels)
    model.save_model(str(tmp_path / "model.json"))
    document = {"runtime": "xgboost", "parameters": {"predict": "label"}}
    runtime = loaded(mf.write_manifest(tmp_path, document))
    (output,) = runtime.metadata().outputs
    assert (output.name, output.datatype, output.shape) == ("prediction", "INT64", (-1,))
    answered = runtime.predict({"input": features})["prediction"]
    np.testing.assert_array_equal(answered, model.predict(features))
    with pytest.raises(LoadError, match=r"parameters\.predict: 'labels' is not one of raw, label"):
        runtime_for(
            mf.write_manifest(tmp_path, {**document, "parameters": {"predict": "labels"}})
        ).load()
