"""Metrics, drift, request logs and cost, through one real server process."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pitstop.cli import cli as root
from pitstop.monitoring.profile import profile_table
from pitstop.registry import Registry
from pitstop.transports.proto import inference_pb2 as pb
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry, wait_for

LABEL_HANDLER = """\
import time
import numpy as np

class Model:
    def predict(self, inputs):
        x = inputs["x"]
        if x[0, 3] == 777:
            time.sleep(0.03)
        return {"label": (x[:, 0] > 0).astype(np.int64)}
"""
COST_PER_HOUR = 36.0
SECRET = 1234.5


def push(registry: Registry, folder: Path, name: str) -> None:
    mf.make_python_package(folder, source=LABEL_HANDLER)
    path = folder / "pitstop.yaml"
    document = yaml.safe_load(path.read_text())
    document["outputs"] = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
    document["batching"] = {"max_batch_size": 16}
    path.write_text(yaml.safe_dump(document))
    registry.push(folder, name=name, aliases=["production"], actor="t", trust_code=True)


def normal_reference(registry: Registry, model: str) -> None:
    rng = np.random.default_rng(1)
    table = {f"x[{i}]": rng.normal(0, 1, 2000) for i in range(4)}
    profile = profile_table(table, [("x", 4)], "file:reference.csv")
    registry.references.put(model, 1, profile.to_json(), source=profile.source, actor="t")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("src")
    with open_registry(home) as registry:
        for name in ("clf", "stable", "shifted", "auto"):
            push(registry, src / name, name)
        normal_reference(registry, "stable")
        normal_reference(registry, "shifted")
    env = {
        "PITSTOP_DRIFT_INTERVAL_S": "0.3",
        "PITSTOP_DRIFT_MIN_ROWS": "100",
        "PITSTOP_DRIFT_REFERENCE_ROWS": "96",
        "PITSTOP_COST_PER_HOUR": str(COST_PER_HOUR),
        "PITSTOP_LOG_FORMAT": "json",
        "PITSTOP_LOG_REQUESTS": "true",
        "PITSTOP_LOG_PAYLOAD_SAMPLE_RATE": "1",
        "PITSTOP_LOG_REDACT": '["x", "secret"]',
    }
    with ServerProcess(home, env) as process:
        yield process


def token(server: ServerProcess) -> dict[str, str]:
    return {"authorization": f"Bearer {(server.home / 'admin.token').read_text().strip()}"}


def body(rows: np.ndarray, **parameters: Any) -> dict[str, Any]:
    tensor = {"name": "x", "datatype": "FP32", "shape": list(rows.shape)}
    return {"inputs": [{**tensor, "data": rows.reshape(-1).tolist()}], "parameters": parameters}


def infer(server: ServerProcess, model: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=payload, timeout=10)


def scrape(server: ServerProcess) -> dict[str, float]:
    """``name{labels}`` (labels sorted as the exposition writes them) → value."""
    text = httpx.get(f"{server.url}/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    found = [
        value
        for key, value in samples.items()
        if key.split("{")[0] == name and all(w in key for w in wanted)
    ]
    assert len(found) == 1, f"{name} {labels}: {len(found)} samples"
    return found[0]


def test_requests_errors_and_buckets(server: ServerProcess) -> None:
    rows = np.array([[1, 0, 0, 0], [-1, 0, 0, 0]], dtype=np.float32)
    for _ in range(4):
        assert infer(server, "clf", body(rows)).status_code == 200
    slow = np.array([[1, 0, 0, 777]], dtype=np.float32)
    assert infer(server, "clf", body(slow)).status_code == 200
    assert infer(server, "clf", {"inputs": [{"name": "nope"}]}).status_code == 400
    wrong = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert infer(server, "clf", wrong).status_code == 400
    assert infer(server, "clf", body(slow, timeout=1)).status_code == 504
    assert infer(server, "no-such-model", body(rows)).status_code == 404
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([1, 0, 0, 0])
        call(pb.ModelInferRequest(model_name="clf", inputs=[tensor]), timeout=10)

    m = scrape(server)
    rest = {"model": "clf", "version": "1", "transport": "rest"}
    assert sample(m, "pitstop_requests_total", **rest, outcome="success") == 5
    assert sample(m, "pitstop_requests_total", model="clf", transport="grpc") == 1
    assert sample(m, "pitstop_request_errors_total", **rest, type="timeout") == 1
    # A body the DataPlane refuses, and one the codec refuses, both count as invalid input.
    invalid = sample(
        m, "pitstop_request_errors_total", model="clf", version="", type="invalid_input"
    )
    invalid += sample(m, "pitstop_request_errors_total", **rest, type="invalid_input")
    assert invalid == 2
    # Unknown model names never become label values.
    assert sample(m, "pitstop_request_errors_total", model="_unknown", type="not_found") == 1
    assert not any("no-such-model" in key for key in m)
    # The slow request (>= 30 ms) sits above the 25 ms bucket; the rest below it.
    duration = "pitstop_request_duration_seconds_bucket"
    ok = {**rest, "outcome": "success"}
    assert sample(m, duration, **ok, le="0.025") == 4
    assert sample(m, duration, **ok, le="1.0") == 5
    assert sample(m, "pitstop_batch_size_count", model="clf") >= 5
    assert sample(m, "pitstop_batch_size_bucket", model="clf", le="2.0") >= 5
    assert sample(m, "pitstop_predictions_total", model="clf") == 4 * 2 + 1 + 1
    assert sample(m, "pitstop_output_class_total", model="clf", **{"class": "0"}) == 4
    assert sample(m, "pitstop_output_class_total", model="clf", **{"class": "1"}) == 6
    assert sample(m, "pitstop_model_state", model="clf", state="READY") == 1
    assert sample(m, "pitstop_model_state", model="clf", state="FAILED") == 0
    assert sample(m, "pitstop_loaded_versions", model="clf") == 1
    assert sample(m, "pitstop_model_load_seconds", model="clf") > 0
    assert re.search(r'pitstop_model_version_info\{digest="sha256:[0-9a-f]{64}"', "\n".join(m))
    assert sample(m, "pitstop_traffic_weight_percent", model="clf", target="production") == 100
    assert sample(m, "process_resident_memory_bytes") > 10e6


def test_request_logs_carry_fields_and_redact(server: ServerProcess) -> None:
    rows = np.array([[SECRET, 2, 3, 4]], dtype=np.float32)
    payload = {**body(rows, secret="hunter2", note="kept"), "id": "req-42"}
    assert infer(server, "clf", payload).status_code == 200

    def logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("request_id") == "req-42"]

    assert wait_for(lambda: logged(), 5)
    line = logged()[0]
    assert line["logger"] == "pitstop.requests"
    assert (line["model"], line["version"], line["status"], line["transport"]) == (
        "clf", 1, "ok", "rest",
    )  # fmt: skip
    assert 0 < line["latency_ms"] < 5000
    assert line["inputs"] == {"x": "[REDACTED]"}
    assert line["parameters"] == {"secret": "[REDACTED]", "note": "kept"}
    assert line["outputs"]["label"]["data"] == [1]
    logs = server.logs()
    assert str(SECRET) not in logs
    assert "hunter2" not in logs
    failed = [json.loads(s) for s in logs.splitlines() if '"status": "invalid_input"' in s]
    assert failed
    assert failed[0]["model"] == "clf"
    assert "error" in failed[0]


def drift(server: ServerProcess, model: str) -> dict[str, Any]:
    url = f"{server.url}/v2/pitstop/models/{model}/drift?refresh=1"
    response = httpx.get(url, headers=token(server), timeout=10)
    assert response.status_code == 200, response.text
    versions: list[dict[str, Any]] = response.json()["versions"]
    return versions[0]


def test_shifted_inputs_drift_and_unshifted_do_not(server: ServerProcess) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        assert infer(server, "stable", body(rng.normal(0, 1, (8, 4)))).status_code == 200
        shifted = rng.normal(0, 1, (8, 4)) + np.array([2.0, 0, 0, 0])
        assert infer(server, "shifted", body(shifted)).status_code == 200
    stable, moved = drift(server, "stable"), drift(server, "shifted")
    assert stable["window_rows"] == moved["window_rows"] == 160
    assert stable["reference"] == "file:reference.csv"
    assert stable["max_psi"] < 0.1, stable
    assert not any(f["drifted"] for f in stable["features"])
    worst = moved["features"][0]
    assert worst["name"] == "x[0]"
    assert worst["psi"] > 0.25
    assert worst["drifted"]
    assert worst["ks"] > 0.5
    assert worst["live_mean"] == pytest.approx(2.0, abs=0.3)
    assert all(f["psi"] < 0.25 for f in moved["features"][1:])
    m = scrape(server)
    assert sample(m, "pitstop_drift_max_psi", model="shifted") == pytest.approx(worst["psi"])
    assert sample(m, "pitstop_drift_psi", model="stable", feature="x[0]") < 0.1
    unauthorised = httpx.get(f"{server.url}/v2/pitstop/models/stable/drift")
    assert unauthorised.status_code == 401


def test_first_rows_become_the_reference(server: ServerProcess) -> None:
    rng = np.random.default_rng(3)
    for _ in range(13):
        assert infer(server, "auto", body(rng.normal(5, 1, (8, 4)))).status_code == 200
    assert drift(server, "auto")["status"] in ("scored", "window has 104 of the 100 rows needed")
    with open_registry(server.home) as r:
        stored = r.references.get("auto", 1)
        assert stored is not None
        assert stored.source == "requests"
        assert stored.profile["rows"] == 96
        assert stored.created_by.startswith("server:")
        assert r.history("auto", limit=1)[0].action == "reference.set"
    assert drift(server, "auto")["max_psi"] < 0.1


def test_cost_per_prediction(server: ServerProcess) -> None:
    for _ in range(3):
        assert infer(server, "clf", body(np.ones((2, 4), dtype=np.float32))).status_code == 200
    response = httpx.get(f"{server.url}/v2/pitstop/cost", headers=token(server))
    assert response.status_code == 200, response.text
    report = response.json()
    rows = {row["model"]: row for row in report["versions"]}
    clf = rows["clf"]
    assert clf["predictions"] >= 6
    assert sum(row["share"] for row in rows.values()) == pytest.approx(1.0)
    replica_cost = COST_PER_HOUR * report["covered_s"] / 3600
    assert clf["cost"] == pytest.approx(replica_cost * clf["share"])
    assert clf["cost_per_1k_predictions"] == pytest.approx(clf["cost"] / clf["predictions"] * 1000)
    gauge = sample(scrape(server), "pitstop_cost_per_1k_predictions", model="clf")
    assert gauge == pytest.approx(clf["cost_per_1k_predictions"], rel=0.5)
    assert sample(scrape(server), "pitstop_cost_per_hour") == COST_PER_HOUR


def test_cli_drift_cost_and_reference(server: ServerProcess, tmp_path: Path) -> None:
    runner = CliRunner()
    secret = token(server)["authorization"].split()[1]
    remote = ["--url", server.url, "--token", secret]
    shown = runner.invoke(root, ["drift", "shifted", *remote], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert shown.output.index("x[0]") < shown.output.index("x[1]")
    assert "drifted" in shown.output
    billed = runner.invoke(root, ["cost", "--window", "1h", "--json", *remote])
    assert billed.exit_code == 0, billed.output
    assert json.loads(billed.output)["cost_per_hour"] == COST_PER_HOUR
    data = tmp_path / "reference.csv"
    data.write_text("a,b,c,d\n" + "\n".join(f"{i},{i % 7},{i % 3},1" for i in range(300)))
    env = {"PITSTOP_HOME": str(server.home)}
    stored = runner.invoke(root, ["reference", "clf", "1", str(data)], env=env)
    assert stored.exit_code == 0, stored.output
    with open_registry(server.home) as r:
        found = r.references.get("clf", 1)
    assert found is not None
    assert found.source == "file:reference.csv"
    features = found.profile["features"]
    assert [(f["name"], f["tensor"], f["column"]) for f in features][:2] == [
        ("a", "x", 0), ("b", "x", 1),
    ]  # fmt: skip
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d,e\n1,2,3,4,5\n")
    refused = runner.invoke(root, ["reference", "clf", "1", str(bad)], env=env)
    assert refused.exit_code != 0
    assert "match no input" in str(refused.exception)
