"""Batching, backpressure, deadlines and the response cache through the real REST transport."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry

X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def slow_handler(sleep_s: float, noise: bool = False) -> str:
    extra = " + np.random.rand(*inputs['x'].shape).astype(np.float32)" if noise else ""
    return (
        "import time\nimport numpy as np\n\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        f"        time.sleep({sleep_s})\n"
        f"        return {{'y': (inputs['x'] * 2).astype(np.float32){extra}}}\n"
    )


def push(registry: Registry, folder: Path, name: str, source: str, **manifest: Any) -> None:
    mf.make_python_package(folder, source=source)
    path = folder / "pitstop.yaml"
    document = yaml.safe_load(path.read_text())
    document.update(manifest)
    path.write_text(yaml.safe_dump(document))
    registry.push(folder, name=name, aliases=["production"], actor="t", trust_code=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("src")
    with open_registry(home) as registry:
        push(
            registry,
            src / "batched",
            "batched",
            slow_handler(0.02),
            batching={"max_batch_size": 32, "max_queue_delay_microseconds": 5000},
        )
        push(
            registry,
            src / "tiny-queue",
            "tiny-queue",
            slow_handler(0.3),
            batching={"max_batch_size": 1, "max_queue_size": 2},
        )
        push(registry, src / "direct", "direct", slow_handler(0.3))
        push(
            registry,
            src / "cached",
            "cached",
            slow_handler(0.0),
            cache={"enabled": True, "ttl_s": 60},
        )
        push(
            registry, src / "noisy", "noisy", slow_handler(0.0, noise=True), cache={"enabled": True}
        )
    env = {"PITSTOP_INFERENCE_THREADS": "2", "PITSTOP_MAX_QUEUE_SIZE": "3"}
    with ServerProcess(home, env) as process:
        yield process


def stats(server: ServerProcess, model: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v2/models/{model}/stats")
    return response.json()["model_stats"][0]


def concurrently(count: int, call: Any) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def test_concurrent_requests_are_batched(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/batched/infer"
    responses = concurrently(16, lambda: httpx.post(url, json=X, timeout=10))
    assert [r.status_code for r in responses] == [200] * 16
    assert all(r.json()["outputs"][0]["data"] == [2, 4, 6, 8] for r in responses)
    row = stats(server, "batched")
    assert row["inference_count"] >= 16
    assert row["execution_count"] < row["inference_count"]
    assert max(b["batch_size"] for b in row["batch_stats"]) > 1


def test_full_queue_answers_429_with_retry_after(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/tiny-queue/infer"
    responses = concurrently(8, lambda: httpx.post(url, json=X, timeout=20))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    assert codes.count(200) >= 3  # one running + two queued
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert "queue full" in refused.json()["error"]


def test_unbatched_versions_are_bounded_too(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/direct/infer"
    responses = concurrently(8, lambda: httpx.post(url, json=X, timeout=20))
    assert {r.status_code for r in responses} == {200, 429}


def test_deadline_passed_in_queue_is_504_and_never_runs(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/tiny-queue/infer"
    blocker = threading.Thread(target=lambda: httpx.post(url, json=X, timeout=20))
    blocker.start()
    threading.Event().wait(0.05)
    before = stats(server, "tiny-queue")["inference_count"]
    late = httpx.post(url, json=X | {"parameters": {"timeout": 50_000}}, timeout=20)
    blocker.join()
    assert late.status_code == 504
    assert "deadline" in late.json()["error"]
    assert stats(server, "tiny-queue")["inference_count"] == before + 1  # only the blocker


def test_bad_timeout_parameter_is_400(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/cached/infer"
    response = httpx.post(url, json=X | {"parameters": {"timeout": "soon"}})
    assert response.status_code == 400
    assert "parameters.timeout" in response.json()["error"]


def test_response_cache_hits(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/cached/infer"
    first = httpx.post(url, json=X).json()
    second = httpx.post(url, json=X).json()
    assert first["outputs"] == second["outputs"]
    inference = stats(server, "cached")["inference_stats"]
    assert inference["cache_hit"]["count"] >= 1
    assert inference["cache_miss"]["count"] >= 1
    other = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [4, 3, 2, 1]}]}
    assert httpx.post(url, json=other).json()["outputs"][0]["data"] == [8, 6, 4, 2]


def test_non_deterministic_versions_are_never_cached(server: ServerProcess) -> None:
    url = f"{server.url}/v2/models/noisy/infer"
    answers = {tuple(httpx.post(url, json=X).json()["outputs"][0]["data"]) for _ in range(3)}
    assert len(answers) == 3
    inference = stats(server, "noisy")["inference_stats"]
    assert inference["cache_hit"]["count"] == 0
    assert inference["cache_miss"]["count"] == 0
