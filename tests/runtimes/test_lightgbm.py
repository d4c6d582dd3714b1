"""LightGBM: text models; output shapes follow the objective."""

from __future__ import annotations

from pathlib import Path

import lightgbm
import numpy as np
import pytest

from pitstop.errors import LoadError
from pitstop.protocol.tensor import TensorSpec
from tests import model_factory as mf
from tests.runtimes.package import loaded, runtime_for


def test_regression_gives_one_column(tmp_path: Path) -> None:
    features = mf.iris_rows(150)
    params = {"objective": "regression", "num_leaves": 4, "verbose": -1, "seed": 0}
    booster = lightgbm.train(params, lightgbm.Dataset(features, label=features[:, 0].copy()), 5)
    tmp_path.mkdir(exist_ok=True)
    booster.save_model(str(tmp_path / "model.txt"))
    runtime = loaded(mf.write_manifest(tmp_path, {"runtime": "lightgbm"}), threads=2)
    (output,) = runtime.metadata().outputs
    assert (output.name, output.datatype, output.shape) == ("prediction", "FP64", (-1,))
    result = runtime.predict({"input": features[:5]})["prediction"]
    np.testing.assert_allclose(result, booster.predict(features[:5]))


def test_a_file_that_is_not_a_text_model_is_a_load_error(tmp_path: Path) -> None:
    folder = mf.make_lightgbm_package(tmp_path)
    (folder / "model.txt").write_bytes(b"\x80\x04not a model")
    with pytest.raises(LoadError, match=r"model\.txt"):
        runtime_for(folder).load()


def test_outputs_other_than_prediction_are_a_load_error(tmp_path: Path) -> None:
    folder = mf.make_lightgbm_package(tmp_path)
    with pytest.raises(LoadError, match="'prediction'"):
        runtime_for(folder, outputs=(TensorSpec("probabilities", "FP64", (-1, 3)),)).load()
