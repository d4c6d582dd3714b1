"""An MLflow registry as the source, and MLflow's and KServe V1's protocols, against a real
``mlflow server`` (SQLite backend, local artifact root, on 127.0.0.1, stopped by its PID) with
models registered and aliases moved by MLflow's own client."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.cli import Completed, run_cli
from tests.server import ServerProcess, free_port, open_registry, wait_for

pytestmark = pytest.mark.timeout(240)

COLUMNS = ["a", "b", "c", "d"]
ROWS = [[0.9, 0.3, 0.2, 0.1], [0.1, 0.5, 0.5, 0.5], [0.6, 0.9, 0.1, 0.7]]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (folder / "mlflow.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    log.close()
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (folder / "mlflow.log").read_text()[-3000:]
            try:
                if httpx.get(uri + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its uvicorn worker is in its process group
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@pytest.fixture(scope="module")
def registered(tracking: str) -> dict[str, Any]:
    """fraud v1 (champion) and v2 (scikit-learn), xfraud (XGBClassifier), adder (a custom
    PythonModel), each logged with an input example, as a pipeline would."""
    import mlflow
    import pandas as pd
    import xgboost
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(tracking)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((80, 4)), columns=COLUMNS)
    labels = (frame.a + frame.b > 1.0).astype(int)
    example = frame.head(2)

    class Adder(mlflow.pyfunc.PythonModel):  # local: cloudpickle stores it by value
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input["a"] * 10 + model_input["d"]

    models = [
        ("fraud", lambda: LogisticRegression().fit(frame, labels), mlflow.sklearn),
        ("fraud", lambda: LogisticRegression().fit(frame, 1 - labels), mlflow.sklearn),
        ("xfraud", lambda: xgboost.XGBClassifier(n_estimators=4).fit(frame, labels),
         mlflow.xgboost),
    ]  # fmt: skip
    for name, fit, flavor in models:
        with mlflow.start_run():
            flavor.log_model(fit(), name="model", registered_model_name=name, input_example=example)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model", python_model=Adder(), registered_model_name="adder",
            input_example=example,
        )  # fmt: skip
    mlflow.MlflowClient().set_registered_model_alias("fraud", "champion", "1")
    return {"mlflow": mlflow, "frame": pd.DataFrame(ROWS, columns=COLUMNS)}


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, tracking: str, registered: dict[str, Any]
) -> Path:
    home = tmp_path_factory.mktemp("pitstop")
    for args in (
        ["fraud@champion", "--alias", "production"],
        ["xfraud/1", "--alias", "production"],
        ["adder", "--alias", "production", "--trust-code"],
    ):
        result = pitstop(home, tracking, "import", "mlflow", *args)
        assert result.returncode == 0, result.stderr
    return home


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[ServerProcess]:
    with ServerProcess(home) as server:
        yield server


def pitstop(home: Path, tracking: str, *args: str) -> Completed:
    return run_cli({"PITSTOP_HOME": str(home), "MLFLOW_TRACKING_URI": tracking}, *args)


def versions(home: Path) -> list[int]:
    with open_registry(home) as registry:
        return [v.number for v in registry.versions("fraud")]


def test_import_keeps_lineage_and_trust(home: Path, tracking: str) -> None:
    with open_registry(home) as registry:
        (version,) = registry.versions("fraud")
        adder = registry.versions("adder")[0]
    assert version.meta["mlflow.model"] == "fraud"
    assert version.meta["mlflow.version"] == "1"
    assert version.meta["mlflow.tracking_uri"] == tracking
    assert len(version.meta["mlflow.run_id"]) == 32
    assert version.meta["mlflow.source"].startswith("models:/")
    assert version.meta["mlflow.user"]
    assert version.manifest.columns == tuple(COLUMNS)
    assert version.manifest.warmup, "the input example is the warm-up"
    assert adder.runtime == "pyfunc"
    assert any(r.startswith("mlflow==") for r in adder.manifest.parameters["requirements"])
    # A pyfunc runs its own code: refused without --trust-code, naming the flag.
    refused = pitstop(home, tracking, "import", "mlflow", "adder/1", "--name", "untrusted")
    assert refused.returncode == 1
    assert "--trust-code" in refused.stderr
    # A models:/ URI wherever a source is taken: the same content is the same version.
    again = pitstop(home, tracking, "models", "push", "models:/fraud/1", "--name", "fraud")
    assert again.returncode == 0, again.stderr
    assert "already present as fraud v1" in again.stdout
    missing = pitstop(home, tracking, "import", "mlflow", "fraud@nobody")
    assert missing.returncode == 1
    assert "fraud@nobody" in missing.stderr


@pytest.mark.parametrize("model", ["fraud", "xfraud", "adder"])
def test_invocations_equal_mlflow_pyfunc_predict(
    server: ServerProcess, registered: dict[str, Any], model: str
) -> None:
    frame = registered["frame"]
    expected = np.asarray(
        registered["mlflow"].pyfunc.load_model(f"models:/{model}/1").predict(frame)
    )
    shuffled = frame[["d", "b", "a", "c"]]
    csv = io.StringIO()
    shuffled.to_csv(csv, index=False)
    bodies: list[tuple[str, Any]] = [
        ("application/json", {"dataframe_split": shuffled.to_dict(orient="split")}),
        ("application/json", {"dataframe_records": shuffled.to_dict(orient="records")}),
        ("application/json", {"instances": frame.values.tolist()}),
        ("application/json", {"inputs": {c: frame[c].tolist() for c in frame.columns}}),
        ("text/csv", csv.getvalue()),
    ]
    url = f"{server.url}/v2/models/{model}/invocations"
    for media, body in bodies:
        content = body if isinstance(body, str) else httpx.Request("POST", "/", json=body).read()
        response = httpx.post(url, content=content, headers={"content-type": media}, timeout=10)
        assert response.status_code == 200, (media, body, response.text)
        answer = np.asarray(response.json()["predictions"])
        np.testing.assert_allclose(answer, expected, rtol=1e-6, err_msg=str(body))
        assert answer.dtype.kind == expected.dtype.kind


def test_malformed_invocations_get_mlflow_shaped_400s(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/fraud/invocations"
    cases: list[tuple[str, bytes, int, str]] = [
        ("application/json", b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}', 400,
         "missing column 'b'"),
        ("application/json", b'{"rows": [[1, 2, 3, 4]]}', 400, "rows: not supported"),
        ("application/json", b"{not json", 400, "not valid JSON"),
        ("application/json", b'{"instances": [[1, 2, 3, "x"]]}', 400, "cannot read the values"),
        ("text/csv", b"a,b,c,d\n1,2,3\n", 400, "CSV: row 2 has 3 fields"),
        ("text/plain", b"1,2,3,4", 415, "Content-Type 'text/plain' is not supported"),
    ]  # fmt: skip
    for media, content, status, message in cases:
        response = httpx.post(url, content=content, headers={"content-type": media}, timeout=10)
        assert response.status_code == status, response.text
        assert response.json()["error_code"] == "BAD_REQUEST"
        assert message in response.json()["message"], response.text
    unknown = httpx.post(f"{server.url}/v2/models/nope/invocations", json={"instances": [[1]]})
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    root = httpx.post(f"{server.url}/invocations", json={"instances": [[1]]})
    assert root.status_code == 404
    assert "PITSTOP_DEFAULT_MODEL" in root.json()["message"]
    assert httpx.get(f"{server.url}/ping").status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/version").text


def test_v1_predict_equals_the_v2_route(server: ServerProcess) -> None:
    v2 = httpx.post(
        f"{server.url}/v2/models/xfraud/infer",
        json={"inputs": [{"name": "input", "datatype": "FP64", "shape": [3, 4], "data": ROWS}]},
    )
    assert v2.status_code == 200, v2.text
    (output,) = v2.json()["outputs"]
    rows = httpx.post(f"{server.url}/v1/models/xfraud:predict", json={"instances": ROWS})
    assert rows.status_code == 200, rows.text
    assert rows.json() == {"predictions": output["data"]}
    columns = {c: [row[i] for row in ROWS] for i, c in enumerate(COLUMNS)}
    columnar = httpx.post(f"{server.url}/v1/models/xfraud:predict", json={"inputs": columns})
    assert columnar.json() == {"outputs": output["data"]}
    status = httpx.get(f"{server.url}/v1/models/xfraud")
    assert status.json()["name"] == "xfraud"
    assert status.json()["ready"] is True
    bad = httpx.post(f"{server.url}/v1/models/xfraud:predict", json={"rows": ROWS})
    assert bad.status_code == 400
    assert "instances" in bad.json()["error"]


def test_follow_moves_the_alias_when_mlflow_moves_it_under_load(
    server: ServerProcess, home: Path, tracking: str, registered: dict[str, Any]
) -> None:
    interval = 1.0
    follower = subprocess.Popen(
        [
            sys.executable, "-m", "pitstop", "follow", "mlflow", "--model", "fraud",
            "--alias", "champion=production", "--interval", f"{interval}s",
        ],
        env={**os.environ, "PITSTOP_HOME": str(home), "MLFLOW_TRACKING_URI": tracking},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    served: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set() and len(served) < 20_000:
                response = client.post("/v2/models/fraud/invocations", json={"instances": ROWS[:1]})
                version = response.headers.get("pitstop-model-version", "")
                served.append((time.monotonic(), response.status_code, version))
                time.sleep(0.005)  # steady traffic (~150 requests/s), not a saturating loop

    worker = threading.Thread(target=load)
    worker.start()
    try:
        # Registered after the newest imported version, v2 is imported ahead of its promotion
        # (--prefetch), and nothing serves it yet.
        assert wait_for(lambda: len(versions(home)) == 2, timeout=60)
        time.sleep(interval)
        assert {v for _, _, v in served} == {"1"}
        moved = time.monotonic()
        registered["mlflow"].MlflowClient().set_registered_model_alias("fraud", "champion", "2")
        deadline = moved + interval + 2.0
        while time.monotonic() < deadline + 5 and not any(v == "2" for _, _, v in served):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(30)
        follower.send_signal(signal.SIGTERM)
        output, _ = follower.communicate(timeout=30)
    switched = [t for t, _, v in served if v == "2"]
    assert switched, output.decode()
    assert switched[0] - moved <= interval + 2.0, f"{switched[0] - moved:.2f}s\n{output.decode()}"
    assert [s for _, s, _ in served if s != 200] == [], "failed requests during the swap"
    assert follower.returncode == 0, output.decode()
    history = json.loads(pitstop(home, tracking, "history", "fraud", "--json").stdout)
    (event,) = [e for e in history if e["action"] == "alias.set" and e["after"].get("version") == 2]
    assert event["reason"].startswith("MLflow fraud@champion → version 2 (run ")
    assert ", by " in event["reason"]  # the MLflow user that registered it
    with open_registry(home) as registry:
        assert registry.aliases("fraud")["production"] == 2
        assert registry.versions("fraud")[0].meta["mlflow.version"] == "2"


def test_a_models_uri_is_a_storage_uri(
    tmp_path: Path, tracking: str, registered: dict[str, Any]
) -> None:
    """KServe's STORAGE_URI / PITSTOP_STORAGE_URI may name an MLflow registry version: it is
    downloaded, served as a --model-dir folder, and is MLflow's root /invocations model."""
    env = {"PITSTOP_STORAGE_URI": "models:/xfraud@nobody", "MLFLOW_TRACKING_URI": tracking}
    refused = subprocess.run(
        [sys.executable, "-m", "pitstop", "serve", "--http-port", str(free_port())],
        env={**os.environ, "PITSTOP_HOME": str(tmp_path / "refused"), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "xfraud@nobody" in refused.stderr
    env["PITSTOP_STORAGE_URI"] = "models:/xfraud/1"
    with ServerProcess(tmp_path / "home", env) as server:
        answer = httpx.post(f"{server.url}/invocations", json={"instances": ROWS}, timeout=10)
        assert answer.status_code == 200, answer.text
        expected = (
            registered["mlflow"].pyfunc.load_model("models:/xfraud/1").predict(registered["frame"])
        )
        assert answer.json() == {"predictions": np.asarray(expected).tolist()}
