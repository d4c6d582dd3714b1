"""KServe's ``STORAGE_URI`` with no storage initializer: ``pitstop serve`` downloads the model
folder from S3 itself (a bare model.onnx, as KServe lays it out) and serves it with no registry
database; a URI with nothing under it, or a scheme pitstop does not fetch, is one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests import model_factory as mf
from tests.s3_server import S3Server
from tests.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


def test_a_model_folder_in_s3_is_downloaded_and_served(tmp_path: Path, s3: S3Server) -> None:
    prefix = f"isvc-{uuid.uuid4().hex[:8]}/fraud"
    s3.client().put_object(
        Bucket="models", Key=f"{prefix}/model.onnx", Body=mf.iris_onnx_bytes(zipmap=False)
    )
    env = {**s3.env(), "STORAGE_URI": f"s3://models/{prefix}"}
    with ServerProcess(tmp_path / "home", env=env) as server:
        response = httpx.post(f"{server.url}/v2/models/fraud/infer", json=ROW, timeout=10)
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://models/nothing-here-{}", "no objects under it"),
        ("gs://bucket/model", "let KServe's storage initializer fetch it"),
    ],
)
def test_a_storage_uri_that_cannot_be_served_is_one_clear_error(
    tmp_path: Path, s3: S3Server, uri: str, message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pitstop", "serve", "--http-port", str(free_port())],
        env={**os.environ, **s3.env(), "PITSTOP_HOME": str(tmp_path),
             "STORAGE_URI": uri.format(uuid.uuid4().hex)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode in (1, 2), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
