"""``pitstop serve --model-dir``: one folder (KServe's read-only /mnt/models: an MLflow model or a
pitstop package) served with no registry database, ready only once the model is loaded and warm;
a restart on the same folder is the same version."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests import model_factory as mf
from tests.server import ServerProcess, free_port, open_registry

pytestmark = pytest.mark.timeout(120)

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


def read_only(folder: Path) -> Path:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return folder


def mlflow_onnx_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(mf.iris_onnx_bytes(zipmap=False))
    flavors = {"python_function": {"loader_module": "mlflow.onnx"}, "onnx": {"data": "model.onnx"}}
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": flavors}))
    return read_only(folder)


def test_a_read_only_mlflow_folder_is_served_without_a_registry_database(tmp_path: Path) -> None:
    folder = mlflow_onnx_model(tmp_path / "mnt" / "models")
    home = tmp_path / "home"
    args = ("--model-dir", str(folder), "--model-name", "fraud")
    for start in range(2):  # a restarted pod: same content, same version
        with ServerProcess(home, args=args) as server:  # waits for /v2/health/ready
            response = httpx.post(f"{server.url}/v2/models/fraud/infer", json=ROW, timeout=10)
            assert response.status_code == 200, response.text
            assert response.headers["pitstop-model-version"] == "1", start
            ready = httpx.get(f"{server.url}/v2/models/fraud/ready", timeout=5)
            assert ready.status_code == 200
            # The folder's model is the default of MLflow's root route, as under MLflow.
            scored = httpx.post(
                f"{server.url}/invocations", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}
            )
            assert scored.status_code == 200, scored.text
            assert scored.headers["pitstop-model-version"] == "1"
    with open_registry(home) as registry:
        assert [v.number for v in registry.versions("fraud")] == [1]
        assert registry.aliases("fraud") == {"production": 1}


def test_model_dir_refuses_a_registry_database_and_stray_flags(tmp_path: Path) -> None:
    folder = mf.make_onnx_package(tmp_path / "pkg")
    base = [sys.executable, "-m", "pitstop", "serve", "--http-port", str(free_port())]
    env = {**os.environ, "PITSTOP_HOME": str(tmp_path / "home")}
    database = subprocess.run(
        [*base, "--model-dir", str(folder)],
        env={**env, "PITSTOP_REGISTRY_URL": f"sqlite:///{tmp_path / 'other.db'}"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert database.returncode == 2
    assert "unset PITSTOP_REGISTRY_URL" in database.stderr
    stray = subprocess.run(
        [*base, "--model-name", "x"], env=env, capture_output=True, text=True, timeout=60
    )
    assert stray.returncode == 2
    assert "need --model-dir" in stray.stderr


def test_kserve_bare_layouts_are_served_and_pickles_need_trust(tmp_path: Path) -> None:
    """A folder as KServe's own runtimes take it: only model.onnx; only model.joblib."""
    import joblib

    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "model.onnx").write_bytes(mf.iris_onnx_bytes(zipmap=False))
    with ServerProcess(tmp_path / "h1", args=("--model-dir", str(read_only(onnx)))) as server:
        response = httpx.post(f"{server.url}/v2/models/onnx/infer", json=ROW, timeout=10)
        assert response.status_code == 200, response.text

    pickled = tmp_path / "sklearn"
    pickled.mkdir()
    joblib.dump(mf.iris_classifier(), pickled / "model.joblib")
    read_only(pickled)
    base = [sys.executable, "-m", "pitstop", "serve", "--model-dir", str(pickled)]
    env = {**os.environ, "PITSTOP_HOME": str(tmp_path / "h2")}
    refused = subprocess.run(
        [*base, "--http-port", str(free_port())], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "pickle" in refused.stderr
    assert "model.joblib" in refused.stderr
    trusted = ServerProcess(tmp_path / "h3", args=("--model-dir", str(pickled), "--trust-pickle"))
    with trusted as server:
        body = {"inputs": [{**ROW["inputs"][0], "name": "input-0"}]}
        metadata = httpx.get(f"{server.url}/v2/models/sklearn", timeout=5).json()
        body["inputs"][0]["name"] = metadata["inputs"][0]["name"]
        response = httpx.post(f"{server.url}/v2/models/sklearn/infer", json=body, timeout=10)
        assert response.status_code == 200, response.text
