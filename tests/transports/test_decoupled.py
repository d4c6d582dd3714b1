"""Multi-response (decoupled) models: a python handler that yields, served over Triton's gRPC
stream (tritonclient, with and without the empty final response) and as server-sent events
(Triton's generate extension), refused on the unary routes; a client that goes away stops the
model."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import ServerProcess
from tests.transports.served import transport_server

TOKENS_HANDLER = '''\
import pathlib
import time

import numpy as np


class Model:
    """Yields ``count`` responses: token i of the prompt and its index. A prompt starting
    with '/' is a file the handler writes "closed" to when its generator is closed; a count
    at or past 1000 pauses 20 ms between responses; index 13 fails."""

    def predict(self, inputs):
        prompt = inputs["text"].reshape(-1)[0].decode()
        count = int(inputs["count"].reshape(-1)[0])
        try:
            for i in range(count):
                if i == 13:
                    raise RuntimeError("token 13 is unlucky")
                if count >= 1000:
                    time.sleep(0.02)
                token = f"{prompt}-{i}".encode()
                yield {
                    "token": np.array([token], dtype=object),
                    "index": np.array([i], dtype=np.int32),
                }
        finally:
            if prompt.startswith("/"):
                pathlib.Path(prompt).write_text("closed")
'''


def make_tokens_package(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(TOKENS_HANDLER)
    return mf.write_manifest(
        directory,
        {
            "runtime": "python",
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1]},
                {"name": "count", "datatype": "INT32", "shape": [1]},
            ],
            "outputs": [
                {"name": "token", "datatype": "BYTES", "shape": [1]},
                {"name": "index", "datatype": "INT32", "shape": [1]},
            ],
            "parameters": {"handler": "handler:Model"},
            "warmup": [
                {
                    "inputs": [
                        {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["w"]},
                        {"name": "count", "datatype": "INT32", "shape": [1], "data": [3]},
                    ],
                    "expected_outputs": [
                        {"name": "index", "datatype": "INT32", "shape": [1], "data": [2]}
                    ],
                }
            ],
        },
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    def push_tokens(registry: Registry, src: Path) -> None:
        registry.push(
            make_tokens_package(src / "tokens"), name="tokens", aliases=["production"],
            actor="test", trust_code=True,
        )  # fmt: skip

    yield from transport_server(tmp_path_factory, push_tokens)


def token_inputs(prompt: str, count: int) -> list[Any]:
    text = tgrpc.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=object))
    number = tgrpc.InferInput("count", [1], "INT32")
    number.set_data_from_numpy(np.array([count], dtype=np.int32))
    return [text, number]


def streamed(
    server: ServerProcess, requests: list[tuple[str, list[Any]]], expected: int, **kwargs: Any
) -> list[Any]:
    """Send ``requests`` (model, inputs) on one stream; the first ``expected`` results."""
    results: queue.Queue[Any] = queue.Queue()
    client = tgrpc.InferenceServerClient(server.grpc_target)
    client.start_stream(callback=lambda result, error: results.put(error or result))
    try:
        for index, (model, inputs) in enumerate(requests):
            client.async_stream_infer(model, inputs, request_id=f"r{index}", **kwargs)
        return [results.get(timeout=10) for _ in range(expected)]
    finally:
        client.stop_stream()
        client.close()


def final_flag(result: Any) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


def test_grpc_stream_carries_every_response_then_the_empty_final_one(
    server: ServerProcess,
) -> None:
    requests = [("tokens", token_inputs("a", 3)), ("tokens", token_inputs("b", 2))]
    results = streamed(server, requests, 3 + 1 + 2 + 1, enable_empty_final_response=True)
    assert not any(isinstance(r, InferenceServerException) for r in results), results
    by_request: dict[str, list[Any]] = {}
    for result in results:
        by_request.setdefault(result.get_response().id, []).append(result)
    for rid, prompt, count in (("r0", "a", 3), ("r1", "b", 2)):
        answers = by_request[rid]
        assert [final_flag(r) for r in answers] == [False] * count + [True]
        tokens = [r.as_numpy("token")[0] for r in answers[:-1]]
        assert tokens == [f"{prompt}-{i}".encode() for i in range(count)]
        assert [int(r.as_numpy("index")[0]) for r in answers[:-1]] == list(range(count))
        assert answers[-1].get_response().outputs == []  # the final one is empty


def test_grpc_stream_without_the_empty_final_and_with_a_one_response_model(
    server: ServerProcess,
) -> None:
    x = tgrpc.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    # Nothing for a zero-response request (no empty final asked), then py's one response.
    results = streamed(server, [("tokens", token_inputs("z", 0)), ("py", [x])], 1)
    assert results[0].get_response().model_name == "py"
    assert final_flag(results[0])  # a one-response model's answer is its final one
    np.testing.assert_array_equal(results[0].as_numpy("y"), [[2, 4, 6, 8]])
    results = streamed(server, [("tokens", token_inputs("c", 4))], 4)
    assert [final_flag(r) for r in results] == [False] * 4


def test_a_failure_mid_stream_ends_that_request_with_its_error_and_the_stream_goes_on(
    server: ServerProcess,
) -> None:
    requests = [("tokens", token_inputs("f", 20)), ("tokens", token_inputs("g", 1))]
    results = streamed(server, requests, 13 + 1 + 1)
    assert [int(r.as_numpy("index")[0]) for r in results[:13]] == list(range(13))
    assert isinstance(results[13], InferenceServerException)
    assert "token 13 is unlucky" in results[13].message()
    assert results[14].as_numpy("token")[0] == b"g-0"


def test_unary_inference_refuses_a_decoupled_model_naming_the_streams(
    server: ServerProcess,
) -> None:
    client = tgrpc.InferenceServerClient(server.grpc_target)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("tokens", token_inputs("u", 2))
    assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "ModelStreamInfer" in caught.value.message()
    client.close()
    http = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    text = thttp.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"u"], dtype=object))
    number = thttp.InferInput("count", [1], "INT32")
    number.set_data_from_numpy(np.array([2], dtype=np.int32))
    with pytest.raises(InferenceServerException) as caught:
        http.infer("tokens", [text, number])
    assert caught.value.status() == "501"
    assert "generate_stream" in caught.value.message()
    http.close()
    config = httpx.get(server.url + "/v2/models/tokens/config", timeout=5).json()
    assert config["model_transaction_policy"] == {"decoupled": True}


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield orjson.loads(line[len("data: ") :])


def test_generate_stream_sends_each_response_as_an_event(server: ServerProcess) -> None:
    url = server.url + "/v2/models/tokens/generate_stream"
    with httpx.stream("POST", url, json={"text": "s", "count": 3}, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["pitstop-model-version"] == "1"
        got = list(events(response))
    assert [(e["token"], e["index"]) for e in got] == [("s-0", 0), ("s-1", 1), ("s-2", 2)]
    assert {e["model_name"] for e in got} == {"tokens"}
    # An error after the first response is the last event; one before it is a 4xx.
    with httpx.stream("POST", url, json={"text": "e", "count": 15}, timeout=10) as response:
        got = list(events(response))
    assert len(got) == 14
    assert "token 13 is unlucky" in got[-1]["error"]
    refused = httpx.post(url, json={"text": "e", "cuont": 1}, timeout=10)
    assert refused.status_code == 400
    assert "'cuont': the model has no input of that name" in refused.json()["error"]
    missing = httpx.post(url, json={"text": "e"}, timeout=10)
    assert missing.status_code == 400
    assert "count" in missing.json()["error"]


def test_generate_answers_one_response_and_refuses_more(server: ServerProcess) -> None:
    one = httpx.post(
        server.url + "/v2/models/tokens/generate", json={"text": "o", "count": 1}, timeout=10
    )
    assert one.status_code == 200, one.text
    answered = one.json()
    assert answered.pop("id") == one.headers["pitstop-prediction-id"]  # its prediction id
    assert answered == {"model_name": "tokens", "model_version": "1", "token": "o-0", "index": 0}
    many = httpx.post(
        server.url + "/v2/models/tokens/generate", json={"text": "o", "count": 2}, timeout=10
    )
    assert many.status_code == 400
    assert "use generate_stream" in many.json()["error"]
    py = httpx.post(
        server.url + "/v2/models/py/generate", json={"x": [[1, 2, 3, 4]], "id": "q"}, timeout=10
    )
    assert py.json() == {"model_name": "py", "model_version": "1", "id": "q", "y": [[2, 4, 6, 8]]}
    # A value's missing leading dimensions are filled in; a parameter naming an input is one.
    py = httpx.post(
        server.url + "/v2/models/py/generate_stream",
        json={"parameters": {"x": [1, 2, 3, 4]}},
        timeout=10,
    )
    assert py.text.startswith("data: ")
    assert orjson.loads(py.text[6:])["y"] == [[2, 4, 6, 8]]


def test_a_client_that_goes_away_stops_the_model(server: ServerProcess, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    url = server.url + "/v2/models/tokens/generate_stream"
    body = {"text": str(marker), "count": 5000}  # 100 s of responses if nobody stopped it
    with httpx.stream("POST", url, json=body, timeout=10) as response:
        stream = events(response)
        assert [next(stream)["index"] for _ in range(3)] == [0, 1, 2]
    deadline = time.monotonic() + 5
    while not marker.exists():
        assert time.monotonic() < deadline, "the handler's generator was never closed"
        time.sleep(0.05)
    assert marker.read_text() == "closed"
    # Over gRPC: the stream is cancelled (stop_stream) while the model is mid-way.
    grpc_marker = tmp_path / "grpc-closed"
    results = streamed(server, [("tokens", token_inputs(str(grpc_marker), 5000))], 2)
    assert [int(r.as_numpy("index")[0]) for r in results] == [0, 1]
    deadline = time.monotonic() + 5
    while not grpc_marker.exists():
        assert time.monotonic() < deadline, "the handler's generator was never closed"
        time.sleep(0.05)
