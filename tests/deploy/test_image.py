"""The container image's build stage, run where no image can be built: ``deploy/install.sh``
(what the Dockerfile's build stage runs) into a fresh virtualenv, then the image's command
(`pitstop serve`, here on 127.0.0.1) serving a model folder from that virtualenv alone."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests import model_factory as mf
from tests.deploy.chart import ROOT
from tests.server import free_port

pytestmark = pytest.mark.timeout(600)

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


def test_the_build_stage_installs_a_server_that_serves(tmp_path: Path) -> None:
    target = tmp_path / "opt-pitstop"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    install = subprocess.run(
        ["sh", "deploy/install.sh", str(target), ""],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert "pitstop, version" in install.stdout
    # Only the base install: the test extras are not there.
    probe = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import pytest"], capture_output=True, timeout=60
    )
    assert probe.returncode != 0

    folder = mf.make_onnx_package(tmp_path / "models")
    port = free_port()
    server = subprocess.Popen(
        [
            str(target / "bin" / "pitstop"), "serve", "--host", "127.0.0.1",
            "--http-port", str(port), "--grpc-port", str(free_port()),
            "--model-dir", str(folder), "--model-name", "iris",
        ],
        env={**env, "PITSTOP_HOME": str(tmp_path / "home"), "PITSTOP_SHUTDOWN_GRACE_S": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        response = httpx.post(f"http://127.0.0.1:{port}/v2/models/iris/infer", json=ROW)
        assert response.status_code == 200, response.text
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
