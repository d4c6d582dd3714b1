"""The Open Inference Protocol over HTTP, against a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry, wait_for

IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def body(name: str = "input", rows: list[list[float]] = IRIS, datatype: str = "FP32") -> dict:
    flat = [v for row in rows for v in row]
    return {"inputs": [{"name": name, "shape": [len(rows), 4], "datatype": datatype, "data": flat}]}


def push(registry: Registry, folder: Path, name: str, *aliases: str, **trust: bool) -> int:
    result = registry.push(folder, name=name, aliases=aliases, actor="test", **trust)
    return result.version.number


def handler(factor: float) -> str:
    return (
        "import numpy as np\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        f"        return {{'y': (inputs['x'] * {factor}).astype(np.float32)}}\n"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("packages")
    with open_registry(home) as registry:
        push(registry, mf.make_onnx_package(src / "onnx"), "onnx", "production")
        push(registry, mf.make_sklearn_package(src / "skops"), "skops", "production")
        push(
            registry,
            mf.make_sklearn_package(src / "pickle", fmt="pickle"),
            "pickled",
            "production",
            trust_pickle=True,
        )
        push(registry, mf.make_xgboost_package(src / "xgb"), "xgb", "production")
        push(registry, mf.make_lightgbm_package(src / "lgbm"), "lgbm", "production")
        for factor, aliases in ((2.0, ("production",)), (3.0, ("staging",))):
            folder = mf.make_python_package(src / f"py{factor}", source=handler(factor))
            push(registry, folder, "py", *aliases, trust_code=True)
    with ServerProcess(home, {"PITSTOP_MAX_REQUEST_BYTES": "100000"}) as process:
        yield process


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


@pytest.mark.parametrize("model", ["onnx", "skops", "pickled", "xgb", "lgbm"])
def test_infer_on_every_tabular_runtime(client: httpx.Client, model: str) -> None:
    response = client.post(f"/v2/models/{model}/infer", json=body())
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["model_name"] == model
    assert payload["model_version"] == "1"
    assert response.headers["pitstop-model-version"] == "1"
    assert response.headers["pitstop-model-digest"].startswith("sha256:")
    first = payload["outputs"][0]
    assert first["shape"][0] == 2
    assert len(first["data"]) == int(np.prod(first["shape"]))


def test_classifier_outputs_match_the_model(client: httpx.Client) -> None:
    payload = client.post("/v2/models/onnx/infer", json=body()).json()
    outputs = {o["name"]: o for o in payload["outputs"]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["data"] == [0, 2]  # setosa, virginica
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


def test_requested_outputs_are_filtered(client: httpx.Client) -> None:
    request = body() | {"outputs": [{"name": "probabilities"}]}
    payload = client.post("/v2/models/onnx/infer", json=request).json()
    assert [o["name"] for o in payload["outputs"]] == ["probabilities"]


def test_request_id_is_echoed(client: httpx.Client) -> None:
    payload = client.post("/v2/models/onnx/infer", json=body() | {"id": "req-42"}).json()
    assert payload["id"] == "req-42"


def test_python_handler_and_alias_and_version_in_path(client: httpx.Client) -> None:
    x = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    default = client.post("/v2/models/py/infer", json=x)
    assert default.json()["outputs"][0]["data"] == [2, 4, 6, 8]
    assert default.headers["pitstop-model-version"] == "1"
    staging = client.post("/v2/models/py/versions/staging/infer", json=x)
    assert staging.json()["outputs"][0]["data"] == [3, 6, 9, 12]
    assert staging.headers["pitstop-model-version"] == "2"
    by_number = client.post("/v2/models/py/versions/2/infer", json=x)
    assert by_number.headers["pitstop-model-version"] == "2"
    assert client.get("/v2/models/py/versions/staging/ready").status_code == 200


def test_health_and_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    server = client.get("/v2").json()
    assert server["name"] == "pitstop"
    assert "version" in server
    metadata = client.get("/v2/models/onnx").json()
    assert metadata["name"] == "onnx"
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"] for o in metadata["outputs"]} == {"label", "probabilities"}
    assert client.get("/v2/models/py/versions/2").json()["inputs"][0]["name"] == "x"


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        ({"inputs": []}, "'inputs'"),
        ({"nope": 1}, "'inputs'"),
        ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}, "'data'"),
        (body(name="wrong"), "'wrong'"),
        (body(datatype="FP64"), "datatype FP64"),
        (body(datatype="FP33"), "unknown datatype"),
        (body(rows=[[1.0, 2.0, 3.0, 4.0, 5.0]]), "shape"),
        (
            {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1.0]}]},
            "needs 8",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ["a"] * 4}]},
            "must be numbers",
        ),
        (body() | {"outputs": [{"name": "nope"}]}, "'nope'"),
        (
            {"inputs": [{"name": "input", "shape": [0, 4], "datatype": "FP32", "data": []}]},
            "holds no values",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, -4], "datatype": "FP32", "data": []}]},
            "shape",
        ),
    ],
)
def test_bad_requests_get_400_naming_the_field(
    client: httpx.Client, request_body: dict, fragment: str
) -> None:
    response = client.post("/v2/models/onnx/infer", json=request_body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_invalid_json_is_400(client: httpx.Client) -> None:
    response = client.post("/v2/models/onnx/infer", content=b"{not json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_unknown_model_version_and_alias_are_404(client: httpx.Client) -> None:
    unknown = client.post("/v2/models/nope/infer", json=body())
    assert unknown.status_code == 404
    assert "'nope'" in unknown.json()["error"]
    assert client.post("/v2/models/onnx/versions/9/infer", json=body()).status_code == 404
    alias = client.post("/v2/models/onnx/versions/canary/infer", json=body())
    assert alias.status_code == 404
    assert "canary" in alias.json()["error"]
    assert client.get("/v2/models/nope").status_code == 404
    ready = client.get("/v2/models/nope/ready")
    assert ready.status_code == 404, "unknown is not 'not ready'"
    assert "'nope'" in ready.json()["error"]
    assert client.get("/v2/models/onnx/versions/9/ready").status_code == 404
    assert client.get("/v2/models/onnx/versions/canary/ready").status_code == 404


def test_body_over_the_limit_is_413(client: httpx.Client) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]] * 20000
    response = client.post("/v2/models/onnx/infer", json=body(rows=rows))
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_chunked_bodies_are_read_whole_and_bounded(client: httpx.Client) -> None:
    """No Content-Length: the body arrives in chunks and the limit applies as it streams."""

    def chunks(payload: bytes, size: int = 1000) -> Iterator[bytes]:
        for start in range(0, len(payload), size):
            yield payload[start : start + size]

    small = json.dumps(body()).encode()
    answered = client.post("/v2/models/onnx/infer", content=chunks(small, 7))
    assert answered.status_code == 200, answered.text
    assert answered.headers["content-type"] == "application/json"
    assert answered.headers["pitstop-model-version"] == "1"
    big = json.dumps(body(rows=[[1.0, 2.0, 3.0, 4.0]] * 20000)).encode()
    refused = client.post("/v2/models/onnx/infer", content=chunks(big))
    assert refused.status_code == 413
    assert "limit" in refused.json()["error"]


def test_infer_takes_only_post(client: httpx.Client) -> None:
    assert client.get("/v2/models/onnx/infer").status_code == 405
    assert client.post("/v2/models/onnx/versions//infer", json=body()).status_code == 404


def test_a_client_leaving_mid_body_does_not_disturb_the_server(
    server: ServerProcess, client: httpx.Client
) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(
                b"POST /v2/models/onnx/infer HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{"inputs"'
            )
    response = client.post("/v2/models/onnx/infer", json=body())
    assert response.status_code == 200
    assert "Traceback" not in server.logs()


def test_unloadable_version_is_503_and_reported(server: ServerProcess, tmp_path: Path) -> None:
    with open_registry(server.home) as registry:
        # A python handler pushed without --trust-code must never run.
        push(registry, mf.make_python_package(tmp_path / "p", source=handler(5)), "untrusted")
        assert registry.aliases("untrusted") == {}
        registry.set_alias("untrusted", "production", 1, actor="test")

        def failed() -> bool:
            states = registry.serving_states("untrusted")
            return any(s.state == "FAILED" for s in states)

        assert wait_for(failed, timeout=10)
        error = registry.serving_states("untrusted")[0].error or ""
    assert "trust-code" in error
    x = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    response = httpx.post(f"{server.url}/v2/models/untrusted/infer", json=x)
    assert response.status_code == 503
    assert "failed to load" in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/untrusted/ready").status_code == 503
    with open_registry(server.home) as registry:
        registry.delete_alias("untrusted", "production", actor="test")


def test_tampered_artifact_is_refused_and_the_old_version_keeps_serving(
    server: ServerProcess, tmp_path: Path
) -> None:
    x = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    with open_registry(server.home) as registry:
        push(
            registry,
            mf.make_python_package(tmp_path / "a", source=handler(2)),
            "tamper",
            "production",
            trust_code=True,
        )
        url = f"{server.url}/v2/models/tamper/infer"
        assert wait_for(lambda: httpx.post(url, json=x).status_code == 200, timeout=10)
        record = registry.version(
            "tamper",
            push(
                registry,
                mf.make_python_package(tmp_path / "b", source=handler(7)),
                "tamper",
                trust_code=True,
            ),
        )
        stored = registry.fetch(record)
        target = stored / "handler.py"
        target.chmod(0o644)
        target.write_text(handler(1000))
        registry.set_alias("tamper", "production", record.number, actor="test")

        def failed() -> bool:
            return any(
                s.version == 2 and s.state == "FAILED" for s in registry.serving_states("tamper")
            )

        assert wait_for(failed, timeout=10)
        state = next(s for s in registry.serving_states("tamper") if s.version == 2)
    assert "handler.py" in (state.error or "")
    response = httpx.post(url, json=x)
    assert response.status_code == 200
    assert response.headers["pitstop-model-version"] == "1"
    assert response.json()["outputs"][0]["data"] == [2, 4, 6, 8]


def test_alias_move_under_load_has_no_failed_request(server: ServerProcess, tmp_path: Path) -> None:
    x = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    with open_registry(server.home) as registry:
        push(
            registry,
            mf.make_python_package(tmp_path / "a", source=handler(2)),
            "swap",
            "production",
            trust_code=True,
        )
        v2 = push(
            registry,
            mf.make_python_package(tmp_path / "b", source=handler(4)),
            "swap",
            trust_code=True,
        )
    url = f"{server.url}/v2/models/swap/infer"
    assert wait_for(lambda: httpx.post(url, json=x).status_code == 200, timeout=10)
    seen: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=10.0) as http:
            for _ in range(5000):  # bounded; stops far earlier
                if stop.is_set():
                    return
                response = http.post(url, json=x)
                seen.append(
                    (
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("pitstop-model-version"),
                    )
                )

    clients = [threading.Thread(target=loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(0.5)
    with open_registry(server.home) as registry:
        moved_at = time.monotonic()
        registry.set_alias("swap", "production", v2, actor="test")
    switched = wait_for(lambda: any(t > moved_at and v == "2" for t, _, v in list(seen)), timeout=5)
    time.sleep(0.3)
    stop.set()
    for thread in clients:
        thread.join(timeout=15)
    assert switched
    first_new = min(t for t, _, v in seen if v == "2")
    assert first_new - moved_at < 2.0
    assert [s for _, s, _ in seen if s != 200] == []
    assert {v for _, _, v in seen} == {"1", "2"}
    assert all(v == "2" for t, _, v in seen if t > first_new + 0.5)
