"""The python runtime: trust, the handler contract, and isolation between versions."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pitstop.errors import InternalError, InvalidInput, LoadError, PermissionDenied, Unsupported
from pitstop.registry.manifest import read_manifest
from pitstop.runtimes.base import Responder
from pitstop.serving.warmup import load_and_validate
from tests import model_factory as mf
from tests.runtimes.package import loaded, runtime_for

X = {"x": np.ones((2, 4), dtype=np.float32)}


def test_user_code_is_refused_without_trust(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    source = f"open({str(marker)!r}, 'w').close()\nclass Model:\n    pass\n"
    folder = mf.make_python_package(tmp_path / "pkg", source=source)
    with pytest.raises(PermissionDenied, match="--trust-code"):
        runtime_for(folder).load()
    assert not marker.exists()  # refused before any user code ran


def test_inputs_and_outputs_must_be_declared(tmp_path: Path) -> None:
    folder = mf.make_python_package(tmp_path)
    with pytest.raises(LoadError, match="declare"):
        runtime_for(folder, trust_code=True, outputs=()).load()


@pytest.mark.parametrize(
    ("handler", "fragment"),
    [
        (None, "handler"),
        ("handler", "module:Class"),
        ("nope:Model", "'nope'"),
        ("handler:Nope", "'Nope'"),
    ],
)
def test_bad_handler_names_are_load_errors(
    tmp_path: Path, handler: str | None, fragment: str
) -> None:
    folder = mf.make_python_package(tmp_path)
    parameters = {} if handler is None else {"handler": handler}
    with pytest.raises(LoadError, match=fragment):
        runtime_for(folder, trust_code=True, parameters=parameters).load()


def test_lifecycle_hooks_receive_folder_and_parameters(tmp_path: Path) -> None:
    source = """\
import numpy as np

class Model:
    def load(self, path, parameters):
        global FOLDER
        FOLDER = path
        self.factor = float(parameters["factor"]) + len((path / "extra.txt").read_text())

    def predict(self, inputs):
        return {"y": inputs["x"] * self.factor, "ignored": inputs["x"]}

    def unload(self):
        open(FOLDER / "unloaded", "w").close()
"""
    folder = mf.make_python_package(tmp_path, source=source)
    (folder / "extra.txt").write_text("abc")
    runtime = loaded(folder, trust_code=True, parameters={"handler": "handler:Model", "factor": 1})
    result = runtime.predict({"x": np.ones((2, 4), dtype=np.float64)})
    assert list(result) == ["y"]  # undeclared outputs are dropped
    assert result["y"].dtype == np.float32  # cast to the declared FP32
    np.testing.assert_array_equal(result["y"], np.full((2, 4), 4.0))
    handler_modules = {name for name in sys.modules if name.startswith("pitstop_handler_")}
    runtime.unload()
    assert (folder / "unloaded").exists()
    assert len(handler_modules - set(sys.modules)) == 1  # this version's module is forgotten


def test_missing_declared_output_is_an_internal_error_naming_it(tmp_path: Path) -> None:
    source = "class Model:\n    def predict(self, inputs):\n        return {'z': inputs['x']}\n"
    runtime = loaded(mf.make_python_package(tmp_path, source=source), trust_code=True)
    with pytest.raises(InternalError, match="'y'"):
        runtime.predict(X)


def test_user_exceptions_propagate_unchanged(tmp_path: Path) -> None:
    source = (
        "from pitstop.errors import InvalidInput\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        if inputs['x'].sum() < 0:\n"
        "            raise InvalidInput(\"input 'x': must be positive\")\n"
        "        raise KeyError('boom')\n"
    )
    runtime = loaded(mf.make_python_package(tmp_path, source=source), trust_code=True)
    with pytest.raises(InvalidInput, match="'x'"):
        runtime.predict({"x": -X["x"]})
    with pytest.raises(KeyError, match="boom"):
        runtime.predict(X)


def test_two_versions_of_one_handler_do_not_share_modules(tmp_path: Path) -> None:
    source = (
        "import helpers\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        return {'y': inputs['x'] * helpers.FACTOR}\n"
    )
    runtimes = []
    for factor in (2, 3):
        folder = mf.make_python_package(tmp_path / f"v{factor}", source=source)
        (folder / "helpers.py").write_text(f"FACTOR = {factor}\n")
        runtimes.append(loaded(folder, trust_code=True))
    assert [float(r.predict(X)["y"][0, 0]) for r in runtimes] == [2.0, 3.0]
    assert not any(str(tmp_path) in entry for entry in sys.path)
    assert "helpers" not in sys.modules


def test_package_handlers_use_relative_imports(tmp_path: Path) -> None:
    folder = mf.make_python_package(tmp_path, source="")
    (folder / "handler.py").unlink()
    package = folder / "handler"
    package.mkdir()
    (package / "scale.py").write_text("FACTOR = 5\n")
    (package / "__init__.py").write_text(
        "from .scale import FACTOR\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        return {'y': inputs['x'] * FACTOR}\n"
    )
    assert float(loaded(folder, trust_code=True).predict(X)["y"][0, 0]) == 5.0


def test_import_errors_are_load_errors_and_leave_nothing_behind(tmp_path: Path) -> None:
    folder = mf.make_python_package(tmp_path, source="raise RuntimeError('broken handler')\n")
    before = set(sys.modules)
    with pytest.raises(LoadError, match="broken handler"):
        runtime_for(folder, trust_code=True).load()
    assert set(sys.modules) == before
    assert str(folder) not in sys.path


GENERATOR = (
    "class Model:\n"
    "    def predict(self, inputs):\n"
    "        for k in range(int(inputs['x'][0, 0])):\n"
    "            yield {'y': inputs['x'] * k}\n"
)


def test_a_generator_handler_is_decoupled_and_yields_checked_responses(tmp_path: Path) -> None:
    runtime = loaded(mf.make_python_package(tmp_path, source=GENERATOR), trust_code=True)
    assert runtime.metadata().decoupled
    assert isinstance(runtime, Responder)
    x = {"x": np.full((1, 4), 3, dtype=np.float32)}
    answers = list(runtime.responses(x))
    assert [a["y"].tolist() for a in answers] == [[[0.0] * 4], [[3.0] * 4], [[6.0] * 4]]
    assert all(a["y"].dtype == np.float32 for a in answers)
    with pytest.raises(Unsupported, match="decoupled"):
        runtime.predict(x)
    bad = "class Model:\n    def predict(self, inputs):\n        yield [1, 2]\n"
    runtime = loaded(mf.make_python_package(tmp_path / "bad", source=bad), trust_code=True)
    with pytest.raises(InternalError, match="not a dict"):
        list(runtime.responses(X))
    plain = loaded(mf.make_python_package(tmp_path / "plain"), trust_code=True)
    assert not plain.metadata().decoupled
    assert isinstance(plain, Responder)
    assert len(list(plain.responses(X))) == 1  # a one-response model answers once


def test_a_decoupled_model_is_warmed_on_its_last_response_and_never_batched(
    tmp_path: Path,
) -> None:
    folder = mf.make_python_package(tmp_path, source=GENERATOR)
    manifest = yaml.safe_load((folder / mf.MANIFEST).read_text())
    example = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [2, 2, 2, 2]}
    last = {"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [2, 2, 2, 2]}
    manifest["warmup"] = [{"inputs": [example], "expected_outputs": [last]}]
    mf.write_manifest(folder, manifest)
    options = {"trust_pickle": False, "trust_code": True, "threads": 1, "runs": 2}
    runtime, metadata, report = load_and_validate(folder, read_manifest(folder), **options)
    assert metadata.decoupled
    assert report.checked_outputs == 1
    runtime.unload()
    last["data"] = [0, 0, 0, 0]  # the first response, not the last
    mf.write_manifest(folder, manifest)
    with pytest.raises(LoadError, match="warm-up example 0"):
        load_and_validate(folder, read_manifest(folder), **options)
    manifest["warmup"] = []
    manifest["batching"] = {"max_batch_size": 8}
    mf.write_manifest(folder, manifest)
    with pytest.raises(LoadError, match="not batched"):
        load_and_validate(folder, read_manifest(folder), **options)
