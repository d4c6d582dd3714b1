"""Closing the loop through a real server: prediction ids on every answer, feedback joined to
them (REST, gRPC, the CLI), outcome metrics and A/B verdicts, rollouts guarded by outcomes,
bandit routing, and feedback the server cannot use (counted, 4xx, never a 500)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from pitstop.protocol.prediction_id import new_id
from pitstop.transports.proto import feedback_pb2 as fb
from tests.cli import run_cli
from tests.handler_models import SCORE, body, push
from tests.raw_http import post_all
from tests.server import ServerProcess, open_registry, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    env = {"PITSTOP_ROLLOUT_TICK_S": "0.2", "PITSTOP_PREDICTIONS_TTL_S": "3600"}
    with ServerProcess(home, env) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {(server.home / 'admin.token').read_text().strip()}"}


def ready(server: ServerProcess, model: str, version: int | None = None) -> None:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready"
    assert wait_for(lambda: httpx.get(server.url + path).status_code == 200, 20), path


def predicted(response: httpx.Response) -> float:
    value: float = response.json()["outputs"][0]["data"][0]
    return value


def predict_many(server: ServerProcess, model: str, count: int) -> list[tuple[str, str, float]]:
    """``count`` predictions: (prediction id, version, predicted value)."""
    rng = random.Random(count)
    bodies = [json.dumps(body(rng)).encode() for _ in range(count)]
    answers = asyncio.run(post_all(server.port, f"/v2/models/{model}/infer", bodies))
    found = []
    for answer in answers:
        assert answer.status == 200, answer.body
        decoded = json.loads(answer.body)
        version = answer.headers["pitstop-model-version"]
        found.append((decoded["id"], version, decoded["outputs"][0]["data"][0]))
    assert len(found) == count
    return found


def labelled(
    predictions: list[tuple[str, str, float]], accuracy: dict[str, float], seed: int
) -> list[dict[str, Any]]:
    """A label per prediction: right with the probability its version's ``accuracy`` says."""
    rng = random.Random(seed)
    return [
        {"id": pid, "label": value if rng.random() < accuracy[version] else value + 1.0}
        for pid, version, value in predictions
    ]


def test_every_answer_carries_a_prediction_id(server: ServerProcess, tmp_path: Path) -> None:
    with open_registry(server.home) as registry:
        push(registry, tmp_path / "v1", "ids", SCORE, "production")
    ready(server, "ids")
    url = f"{server.url}/v2/models/ids/infer"
    rng = random.Random(0)
    generated = httpx.post(url, json=body(rng))
    pid = generated.json()["id"]
    assert uuid.UUID(pid).version == 7
    assert generated.headers["pitstop-prediction-id"] == pid
    own = httpx.post(url, json={**body(rng), "id": "order-17"})
    assert own.json()["id"] == "order-17" == own.headers["pitstop-prediction-id"]
    again = httpx.post(url, json=body(rng)).json()["id"]
    assert again != pid
    client = grpcclient.InferenceServerClient(server.grpc_target)
    try:
        data = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(data)
        result = client.infer("ids", [tensor])
        grpc_id = result.get_response().id
        assert uuid.UUID(grpc_id).version == 7
        named = client.infer("ids", [tensor], request_id="grpc-1")
        assert named.get_response().id == "grpc-1"
    finally:
        client.close()
    # Each id is a prediction feedback can be joined to: the generated ones and the caller's.
    answer = httpx.post(
        f"{server.url}/v2/models/ids/feedback",
        json={"feedback": [
            {"id": pid, "reward": 1}, {"id": "order-17", "reward": 0},
            {"id": grpc_id, "reward": 2.5},
        ]},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 3


def test_ab_report_declares_the_better_arm(
    server: ServerProcess, admin: dict[str, str], tmp_path: Path
) -> None:
    with open_registry(server.home) as registry:
        push(registry, tmp_path / "v1", "fraud", SCORE, "production")
        push(registry, tmp_path / "v2", "fraud", SCORE + "  # version 2")
    ready(server, "fraud")
    policy = {"arms": [{"target": "production", "weight": 50}, {"target": "2", "weight": 50}]}
    put = httpx.put(f"{server.url}/v2/pitstop/models/fraud/traffic", headers=admin, json=policy)
    assert put.status_code == 200, put.text
    ready(server, "fraud", 2)
    assert wait_for(
        lambda: {httpx.post(f"{server.url}/v2/models/fraud/infer", json=body(random.Random(i)))
                 .headers["pitstop-model-version"] for i in range(20)} == {"1", "2"},
        10,
    )  # fmt: skip
    predictions = predict_many(server, "fraud", 10_000)
    served = Counter(version for _, version, _ in predictions)
    assert min(served.values()) > 4_000, served
    # Arm B (version 2) is truly 5 points better: 75% right against 70%.
    items = labelled(predictions, {"1": 0.70, "2": 0.75}, seed=1)
    # Half through the API, half as a file through `pitstop feedback`.
    sent = httpx.post(f"{server.url}/v2/models/fraud/feedback", json={"feedback": items[:5_000]})
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == 5_000
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items[5_000:]))
    env = {"PITSTOP_HOME": str(server.home)}
    done = run_cli(env, "feedback", "fraud", str(path), "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert "5000 accepted" in done.stdout, done.stdout

    report = httpx.get(f"{server.url}/v2/models/fraud/ab", headers=admin, params={"mde": 0.05})
    assert report.status_code == 200, report.text
    comparison = next(
        c for c in report.json()["reports"][0]["comparisons"] if c["metric"] == "accuracy"
    )
    assert comparison["verdict"] == "better", comparison
    assert comparison["p_value"] < 0.05
    assert 0 < comparison["low"] < comparison["difference"] < comparison["high"]
    assert comparison["a"]["n"] + comparison["b"]["n"] == 10_000
    cli = run_cli(env, "ab", "report", "fraud", "--url", server.url, "--mde", "0.05")
    assert cli.returncode == 0, cli.stderr
    assert "b is better: accuracy" in cli.stdout, cli.stdout
    outcomes = run_cli(env, "outcomes", "fraud", "--url", server.url, "--json")
    assert outcomes.returncode == 0, outcomes.stderr
    groups = {(g["version"], g["arm"]): g for g in json.loads(outcomes.stdout)["versions"]}
    first, second = groups[(1, "production")], groups[(2, "2")]
    assert first["metrics"]["accuracy"]["value"] < second["metrics"]["accuracy"]["value"]
    assert first["metrics"]["accuracy"]["low"] < 0.70 < first["metrics"]["accuracy"]["high"]
    assert first["metrics"]["error_rate"]["value"] == pytest.approx(
        1 - first["metrics"]["accuracy"]["value"]
    )
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'pitstop_outcome{arm="2",metric="accuracy",model="fraud",version="2"}' in metrics


def test_feedback_the_server_cannot_use_is_counted_and_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    with open_registry(server.home) as registry:
        push(registry, tmp_path / "v1", "loans", SCORE, "production")
    ready(server, "loans")
    url = f"{server.url}/v2/models/loans/feedback"
    pid = httpx.post(f"{server.url}/v2/models/loans/infer", json=body(random.Random(3))).json()[
        "id"
    ]
    unknown = httpx.post(url, json={"id": "never-made", "label": 1})
    assert unknown.status_code == 404
    assert "never-made" in unknown.json()["error"]
    old = new_id(now_ms=1_000_000)  # a generated id from 1970: long expired
    expired = httpx.post(url, json={"id": old, "reward": 1})
    assert expired.status_code == 404
    assert "1 expired" in expired.json()["error"]
    mixed = httpx.post(url, json=[{"id": pid, "value": 1.5}, {"id": "nope", "value": 2}])
    assert mixed.status_code == 200, mixed.text
    assert mixed.json() | {} == {
        "accepted": 1, "replaced": 0, "unknown": 1, "expired": 0, "unknown_ids": ["nope"],
        "expired_ids": [],
    }  # fmt: skip
    cases = [
        ({"feedback": [{"id": pid}]}, "feedback[0]: exactly one of label, value, reward"),
        ({"feedback": [{"id": pid, "label": 1, "reward": 1}]}, "feedback[0]: exactly one"),
        ({"feedback": [{"id": pid, "reward": "a lot"}]}, "feedback[0].reward"),
        ({"feedback": [{"id": 7, "reward": 1}]}, "feedback[0].id"),
        ({"feedback": [{"id": pid, "reward": 1, "at": "yesterday"}]}, "feedback[0].at"),
        ({"feedback": [{"id": pid, "reward": 1, "row": -1}]}, "feedback[0].row"),
        ({"feedback": [{"id": pid, "reward": 1, "lable": 1}]}, "feedback[0].lable"),
        ({"feedback": [{"id": pid, "reward": 1, "row": 3}]}, None),  # a reward has no row check
        ({"feedback": [{"id": pid, "value": 1, "row": 3}]}, "feedback[0].row"),
        ({"feedback": [{"id": pid, "label": "cat"}]}, "feedback[0].label"),
        ({"feedback": []}, "empty"),
        ({"feedback": [{"id": pid, "reward": 1}] * 10_001}, "at most 10000"),
        ([1, 2], "feedback[0] must be an object"),
    ]
    for sent, message in cases:
        response = httpx.post(url, json=sent)
        if message is None:
            assert response.status_code == 200, response.text
            continue
        assert response.status_code == 400, (
            sent if len(str(sent)) < 300 else message,
            response.text,
        )
        assert message in response.json()["error"], response.text
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert (
        httpx.post(
            f"{server.url}/v2/models/nobody/feedback", json={"id": pid, "reward": 1}
        ).status_code
        == 404
    )

    channel = grpc.insecure_channel(server.grpc_target)
    call = channel.unary_unary(
        "/pitstop.Feedback/ModelFeedback",
        request_serializer=fb.ModelFeedbackRequest.SerializeToString,
        response_deserializer=fb.ModelFeedbackResponse.FromString,
    )
    try:
        answer = call(fb.ModelFeedbackRequest(
            model_name="loans", items=[fb.FeedbackItem(id=pid, value=2.0),
                                       fb.FeedbackItem(id="nope", reward=1)],
        ), timeout=10)  # fmt: skip
        assert (answer.accepted, answer.replaced, answer.unknown) == (1, 1, 1)
        with pytest.raises(grpc.RpcError) as missing:
            call(
                fb.ModelFeedbackRequest(
                    model_name="loans", items=[fb.FeedbackItem(id="x", reward=1)]
                ),
                timeout=10,
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as bad:
            call(
                fb.ModelFeedbackRequest(model_name="loans", items=[fb.FeedbackItem(id=pid)]),
                timeout=10,
            )
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "feedback[0]" in (bad.value.details() or "")
    finally:
        channel.close()
    metrics = httpx.get(f"{server.url}/metrics").text
    for result in ("accepted", "unknown", "expired", "rejected"):
        assert f'pitstop_feedback_total{{model="loans",result="{result}"}}' in metrics, result


class LabelledTraffic:
    """A client that predicts and sends each prediction's label right away, right with the
    probability its version's accuracy says (bounded by count and time)."""

    def __init__(self, url: str, accuracy: dict[str, float], limit: int = 20_000) -> None:
        self._url = url
        self._accuracy = accuracy
        self._limit = limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.statuses: Counter[int] = Counter()

    def _run(self) -> None:
        rng = random.Random(7)
        batch: list[dict[str, Any]] = []
        with httpx.Client(timeout=10) as client:
            for _ in range(self._limit):
                if self._stop.is_set():
                    return
                response = client.post(f"{self._url}/infer", json=body(rng))
                self.statuses[response.status_code] += 1
                if response.status_code != 200:
                    continue
                version = response.headers["pitstop-model-version"]
                value = predicted(response)
                right = rng.random() < self._accuracy[version]
                batch.append({"id": response.json()["id"], "label": value if right else value + 1})
                if len(batch) >= 100:
                    sent = client.post(f"{self._url}/feedback", json={"feedback": batch})
                    self.statuses[sent.status_code] += 1
                    batch = []

    def __enter__(self) -> LabelledTraffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(20)


def deploy_guarded(server: ServerProcess, admin: dict[str, str], model: str) -> None:
    response = httpx.post(
        f"{server.url}/v2/pitstop/models/{model}/deploy",
        headers=admin,
        json={
            "version": 2, "steps": [50], "interval_s": 0.5,
            "guard": {
                "min_requests": 50, "outcome_metric": "accuracy", "outcome_margin": 0.08,
                "outcome_min_samples": 300,
            },
        },
    )  # fmt: skip
    assert response.status_code == 200, response.text


def rollout_of(server: ServerProcess, admin: dict[str, str], model: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(
        f"{server.url}/v2/pitstop/models/{model}/traffic", headers=admin
    ).json()["rollout"]
    return found


@pytest.mark.parametrize(
    ("model", "canary", "state", "said"),
    [("worse", 0.55, "ROLLED_BACK", "outcome accuracy: canary is worse than the margin"),
     ("equal", 0.90, "PROMOTED", "all guards held")],
)  # fmt: skip
def test_outcome_guard_rolls_back_a_worse_canary_and_promotes_an_equal_one(
    server: ServerProcess,
    admin: dict[str, str],
    tmp_path: Path,
    model: str,
    canary: float,
    state: str,
    said: str,
) -> None:
    """The canary answers exactly as production does (errors, latency and outputs are equal:
    no other guard can tell them apart); only what happens after its predictions differs."""
    with open_registry(server.home) as registry:
        push(registry, tmp_path / "v1", model, SCORE, "production")
        push(registry, tmp_path / "v2", model, SCORE + "  # the canary")
    ready(server, model)
    url = f"{server.url}/v2/models/{model}"
    with LabelledTraffic(url, {"1": 0.90, "2": canary}) as traffic:
        deploy_guarded(server, admin, model)
        promoted = wait_for(lambda: rollout_of(server, admin, model)["state"] == state, 60)
        assert promoted, (
            rollout_of(server, admin, model),
            httpx.get(f"{url}/outcomes", headers=admin).json(),
            server.logs()[-3000:],
        )
    rollout = rollout_of(server, admin, model)
    assert said in rollout["reason"], rollout
    assert set(traffic.statuses) == {200}, traffic.statuses


def test_bandit_sends_most_traffic_to_the_best_arm(
    server: ServerProcess, admin: dict[str, str], tmp_path: Path
) -> None:
    """Three arms convert at 20%, 50% and 80%: after N = 3,000 requests (with feedback sent
    every 50), at least 70% of the last 500 go to the best arm, and no arm's weight falls
    below its 5% minimum."""
    with open_registry(server.home) as registry:
        for number in (1, 2, 3):
            push(
                registry,
                tmp_path / f"v{number}",
                "offers",
                SCORE + f"  # {number}",
                *(["production"] if number == 1 else []),
            )
    policy = {
        "arms": [{"target": "production", "weight": 34}, {"target": "2", "weight": 33},
                 {"target": "3", "weight": 33}],
        "bandit": {"metric": "conversion", "min_share": 5, "max_step": 20, "interval_s": 0.5},
    }  # fmt: skip
    put = httpx.put(f"{server.url}/v2/pitstop/models/offers/traffic", headers=admin, json=policy)
    assert put.status_code == 200, put.text
    for number in (1, 2, 3):
        ready(server, "offers", number)
    rates = {"1": 0.2, "2": 0.5, "3": 0.8}
    rng = random.Random(11)
    versions: list[str] = []
    lowest = 100.0
    batch: list[dict[str, Any]] = []
    with httpx.Client(timeout=10) as client:
        for _ in range(3_000):
            response = client.post(f"{server.url}/v2/models/offers/infer", json=body(rng))
            assert response.status_code == 200, response.text
            version = response.headers["pitstop-model-version"]
            versions.append(version)
            batch.append(
                {"id": response.json()["id"], "reward": int(rng.random() < rates[version])}
            )
            if len(batch) == 50:
                sent = client.post(f"{server.url}/v2/models/offers/feedback", json=batch)
                assert sent.status_code == 200, sent.text
                batch = []
                arms = client.get(
                    f"{server.url}/v2/pitstop/models/offers/traffic", headers=admin
                ).json()["policy"]["arms"]
                lowest = min(lowest, *(arm["weight"] for arm in arms))
    share = Counter(versions[-500:])["3"] / 500
    assert share >= 0.70, Counter(versions[-500:])
    assert lowest >= 5.0
    history = run_cli({"PITSTOP_HOME": str(server.home)}, "history", "offers", "--json")
    assert history.returncode == 0, history.stderr
    moves = [e for e in json.loads(history.stdout) if e["action"] == "policy.set"
             and e["actor"] == "bandit-controller"]  # fmt: skip
    assert moves
    assert "thompson sampling" in moves[-1]["reason"]


def test_feedback_finds_predictions_made_by_another_worker(tmp_path: Path) -> None:
    """With --workers 2 predictions go to the registry: feedback reaching either worker joins
    every prediction, whichever worker made it."""
    home = tmp_path / "home"
    with open_registry(home) as registry:
        push(registry, tmp_path / "v1", "shared", SCORE, "production")
    with ServerProcess(home, {}, ["--workers", "2"]) as process:
        ready(process, "shared")
        ids = []
        for index in range(200):  # a new connection each: the kernel spreads them
            with httpx.Client(timeout=10) as client:
                response = client.post(
                    f"{process.url}/v2/models/shared/infer", json=body(random.Random(index))
                )
                assert response.status_code == 200, response.text
                ids.append(response.json()["id"])
        for start in (0, 100):
            with httpx.Client(timeout=10) as client:
                sent = client.post(
                    f"{process.url}/v2/models/shared/feedback",
                    json=[{"id": i, "reward": 1} for i in ids[start : start + 100]],
                )
            assert sent.status_code == 200, sent.text
            assert sent.json()["accepted"] == 100, sent.json()
