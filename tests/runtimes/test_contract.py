"""The Runtime contract (pitstop.runtimes.base), checked against every built-in runtime."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from pitstop.errors import InvalidInput, LoadError, Unavailable
from pitstop.protocol.datatype import NUMPY_DTYPES
from pitstop.runtimes.base import Runtime, resolve_runtime
from tests import model_factory as mf
from tests.runtimes.package import read_package, runtime_for

Inputs = dict[str, np.ndarray]


def _sklearn_expected(folder: Path, x: Inputs) -> Inputs:
    import skops.io

    model = skops.io.load(folder / "model.skops")
    return {"label": model.predict(x["input"]), "probabilities": model.predict_proba(x["input"])}


def _onnx_expected(_folder: Path, x: Inputs) -> Inputs:
    model = mf.iris_classifier()
    return {"label": model.predict(x["input"]), "probabilities": model.predict_proba(x["input"])}


def _xgboost_expected(folder: Path, x: Inputs) -> Inputs:
    import xgboost

    booster = xgboost.Booster(model_file=str(folder / "model.json"))
    return {"prediction": booster.predict(xgboost.DMatrix(x["input"]))}


def _lightgbm_expected(folder: Path, x: Inputs) -> Inputs:
    import lightgbm

    return {
        "prediction": lightgbm.Booster(model_file=str(folder / "model.txt")).predict(x["input"])
    }


def _iris_batch(n: int) -> Inputs:
    return {"input": mf.iris_rows(n)}


def _iris_bad_inputs() -> list[Inputs]:
    return [
        {"input": mf.iris_rows(3)[:, :3]},  # a feature short
        {"input": np.array([[b"5.1", b"3.5", b"1.4", b"0.2"]], dtype=object)},  # BYTES
    ]


@dataclass(frozen=True)
class Case:
    """One runtime under the contract: how to build its package, feed it and check it."""

    name: str
    platform: str
    build: Callable[[Path], Path]
    batch: Callable[[int], Inputs]
    expected: Callable[[Path, Inputs], Inputs]
    bad_inputs: Callable[[], list[Inputs]] = _iris_bad_inputs
    trust: dict[str, bool] = field(default_factory=dict)


CASES = [
    Case("onnx", "onnxruntime_onnx", mf.make_onnx_package, _iris_batch, _onnx_expected),
    Case("sklearn", "sklearn", mf.make_sklearn_package, _iris_batch, _sklearn_expected),
    Case("xgboost", "xgboost", mf.make_xgboost_package, _iris_batch, _xgboost_expected),
    Case("lightgbm", "lightgbm", mf.make_lightgbm_package, _iris_batch, _lightgbm_expected),
    Case(
        "python",
        "python",
        mf.make_python_package,
        lambda n: {"x": np.arange(n * 4, dtype=np.float32).reshape(n, 4)},
        lambda _folder, x: {"y": x["x"] * 2},
        bad_inputs=list,  # the handler, not the runtime, judges its inputs
        trust={"trust_code": True},
    ),
]


@dataclass(frozen=True)
class Built:
    case: Case
    folder: Path

    def runtime(self, **overrides: object) -> Runtime:
        return runtime_for(self.folder, **{**self.case.trust, **overrides})

    def loaded(self, **overrides: object) -> Runtime:
        runtime = self.runtime(**overrides)
        runtime.load()
        return runtime


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.name)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    case: Case = request.param
    return Built(case, case.build(tmp_path_factory.mktemp(case.name)))


def _concrete(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    return (batch, *shape[1:])


def test_manifest_names_the_runtime(built: Built) -> None:
    name, _ = read_package(built.folder)
    assert name == built.case.name


def test_construction_does_no_io(built: Built) -> None:
    name, context = read_package(built.folder, **built.case.trust)
    missing = replace(context, path=Path("/nonexistent/pitstop/model"))
    runtime = resolve_runtime(name)(missing)  # must not touch the folder
    with pytest.raises(LoadError):
        runtime.load()


def test_metadata_reports_the_declared_interface(built: Built) -> None:
    _, context = read_package(built.folder)
    metadata = built.loaded().metadata()
    assert metadata.platform == built.case.platform
    assert metadata.inputs == context.inputs
    assert metadata.outputs == context.outputs


def test_metadata_is_derived_from_the_model_when_not_declared(built: Built) -> None:
    _, declared = read_package(built.folder)
    runtime = built.runtime(inputs=(), outputs=())
    if built.case.name == "python":
        with pytest.raises(LoadError, match="declare"):
            runtime.load()
        return
    runtime.load()
    assert runtime.metadata().inputs == declared.inputs
    assert runtime.metadata().outputs == declared.outputs


def test_predict_gives_declared_shapes_dtypes_and_the_frameworks_values(built: Built) -> None:
    runtime = built.loaded()
    batch = built.case.batch(7)
    result = runtime.predict(batch)
    expected = built.case.expected(built.folder, batch)
    outputs = runtime.metadata().outputs
    assert set(result) == {spec.name for spec in outputs}
    for spec in outputs:
        array = result[spec.name]
        assert array.shape == _concrete(spec.shape, 7), spec.name
        assert array.dtype == NUMPY_DTYPES[spec.datatype], spec.name
        np.testing.assert_allclose(array, expected[spec.name], rtol=1e-5, atol=1e-6)


def test_concurrent_predictions_equal_sequential_ones(built: Built) -> None:
    runtime = built.loaded()
    batches = [built.case.batch(n) for n in range(1, 17)]
    sequential = [runtime.predict(batch) for batch in batches]
    start = threading.Barrier(8)

    def run(worker: int) -> list[tuple[int, Inputs]]:
        start.wait()
        # Each thread starts on another batch, so different batches run at the same time.
        order = [(worker + k) % len(batches) for k in range(5 * len(batches))]
        return [(index, runtime.predict(batches[index])) for index in order]

    with ThreadPoolExecutor(max_workers=8) as pool:
        for results in pool.map(run, range(8)):
            for index, got in results:
                want = sequential[index]
                assert got.keys() == want.keys()
                for name in want:
                    np.testing.assert_array_equal(got[name], want[name])


def test_predict_before_load_and_after_unload_is_unavailable(built: Built) -> None:
    runtime = built.runtime()
    batch = built.case.batch(2)
    with pytest.raises(Unavailable):
        runtime.predict(batch)
    with pytest.raises(Unavailable):
        runtime.metadata()
    runtime.load()
    runtime.predict(batch)
    runtime.unload()
    with pytest.raises(Unavailable):
        runtime.predict(batch)


def test_bad_input_is_invalid_input_naming_it(built: Built) -> None:
    bad_inputs = built.case.bad_inputs()
    if not bad_inputs:
        pytest.skip(f"the {built.case.name} runtime passes inputs to user code unexamined")
    runtime = built.loaded()
    for inputs in bad_inputs:
        with pytest.raises(InvalidInput, match="'input'"):
            runtime.predict(inputs)


def test_missing_input_is_invalid_input_naming_it(built: Built) -> None:
    runtime = built.loaded()
    if built.case.name == "python":
        pytest.skip("the python runtime passes inputs to user code unexamined")
    with pytest.raises(InvalidInput, match="'input'"):
        runtime.predict({"other": mf.iris_rows(2)})


def test_unload_releases_and_a_second_load_works(built: Built) -> None:
    runtime = built.loaded()
    batch = built.case.batch(3)
    first = runtime.predict(batch)
    runtime.unload()
    runtime.unload()  # idempotent
    runtime.load()
    second = runtime.predict(batch)
    for name, array in first.items():
        np.testing.assert_array_equal(second[name], array)
