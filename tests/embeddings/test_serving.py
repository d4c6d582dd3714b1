"""Serving MiniLM through a real server on 127.0.0.1: V2 JSON, batching of concurrent requests,
and the OpenAI endpoint driven by the official ``openai`` client."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.embeddings.conftest import Imported
from tests.server import ServerProcess


@pytest.fixture(scope="module")
def server(imported: Imported) -> Iterator[ServerProcess]:
    with ServerProcess(imported.home) as process:
        yield process


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20.0) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=20.0)


def v2(texts: list[str], shape: list[int] | None = None, datatype: str = "BYTES") -> dict:
    tensor = {"name": "text", "datatype": datatype, "shape": shape or [len(texts)], "data": texts}
    return {"inputs": [tensor]}


def embed_v2(http: httpx.Client, texts: list[str]) -> np.ndarray:
    response = http.post("/v2/models/minilm/infer", json=v2(texts))
    assert response.status_code == 200, response.text
    (embedding,) = [o for o in response.json()["outputs"] if o["name"] == "embedding"]
    return np.array(embedding["data"], dtype=np.float32).reshape(embedding["shape"])


def test_v2_infer_reports_tokens_and_truncation(http: httpx.Client) -> None:
    response = http.post("/v2/models/minilm/infer", json=v2(["short", "word " * 300]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"] == {"tokens": 3 + 256, "truncated": 1}
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["embedding"]["shape"] == [2, 384]
    assert outputs["truncated"]["data"] == [False, True]
    assert outputs["tokens"]["data"] == [3, 256]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (v2([1.5], datatype="FP32"), "datatype FP32 does not match the model's BYTES"),
        (v2([], shape=[0]), "input 'text': shape [0] holds no values"),
        (v2(["a", "b"], shape=[1, 2]), "shape [1, 2] does not match"),
    ],
)
def test_v2_bad_input_is_400(http: httpx.Client, body: dict, fragment: str) -> None:
    response = http.post("/v2/models/minilm/infer", json=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_concurrent_single_requests_are_batched(http: httpx.Client, server: ServerProcess) -> None:
    texts = [f"request number {i} asks about topic {i % 5}" for i in range(32)]
    sequential = {text: embed_v2(http, [text])[0] for text in texts}
    before = _stats(http)
    barrier = threading.Barrier(len(texts))
    results: dict[str, np.ndarray] = {}

    def send(text: str) -> None:
        with httpx.Client(base_url=server.url, timeout=20.0) as own:
            own.get("/v2/health/live")  # connect before the barrier, so requests arrive together
            barrier.wait(timeout=20)
            results[text] = embed_v2(own, [text])[0]

    threads = [threading.Thread(target=send, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    after = _stats(http)
    assert len(results) == len(texts)
    for text in texts:  # nobody got someone else's row
        np.testing.assert_allclose(results[text], sequential[text], atol=1e-5)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == len(texts)
    assert executions < inferences, f"{executions} runtime calls for {inferences} requests"


def _stats(http: httpx.Client) -> dict:
    (row,) = http.get("/v2/models/minilm/stats").json()["model_stats"]
    assert isinstance(row, dict)
    return row


def test_openai_client_embeds_a_list(client: openai.OpenAI, http: httpx.Client) -> None:
    texts = ["The weather is lovely today.", "He drove to the stadium."]
    result = client.embeddings.create(model="minilm", input=texts)
    assert result.model == "minilm"
    assert [item.index for item in result.data] == [0, 1]
    got = np.array([item.embedding for item in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, embed_v2(http, texts), atol=1e-6)
    assert result.usage.prompt_tokens == result.usage.total_tokens > 4


@pytest.mark.parametrize("model", ["minilm@production", "minilm@1"])
def test_openai_model_may_name_alias_or_version(client: openai.OpenAI, model: str) -> None:
    result = client.embeddings.create(model=model, input="hello", encoding_format="float")
    assert result.model == model
    assert len(result.data[0].embedding) == 384


def test_openai_base64_equals_float(server: ServerProcess, http: httpx.Client) -> None:
    bodies = [
        http.post("/v1/embeddings", json={"model": "minilm", "input": "hi", "encoding_format": f})
        for f in ("float", "base64")
    ]
    as_float = np.array(bodies[0].json()["data"][0]["embedding"], dtype=np.float32)
    raw = base64.b64decode(bodies[1].json()["data"][0]["embedding"])
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), as_float)
    assert bodies[0].headers["pitstop-model-version"] == "1"


def test_openai_reports_truncation_in_a_header(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"model": "minilm", "input": ["a " * 600, "b"]})
    assert response.status_code == 200
    assert response.headers["pitstop-truncated"] == "1"
    assert response.json()["usage"]["prompt_tokens"] == 256 + 3


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "minilm", "input": []}, "input", "empty list"),
        ({"model": "minilm", "input": [""]}, "input", "empty string"),
        ({"model": "minilm", "input": [[101, 2023]]}, "input", "token ids"),
        ({"model": "minilm", "input": [1, 2]}, "input", "token ids"),
        ({"model": "minilm", "input": "x", "encoding_format": "hex"}, "encoding_format", "one of"),
        ({"model": "minilm", "input": "x", "dimensions": 128}, "dimensions", "384 dimensions"),
        ({"input": "x"}, "model", "'model' is required"),
    ],
)
def test_openai_bad_requests(http: httpx.Client, body: dict, param: str, fragment: str) -> None:
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_openai_client_sees_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="no-such-model", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="minilm@no-such-alias", input="x")
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="minilm", input=[])
    assert bad.value.param == "input"


def test_openai_lists_served_models(client: openai.OpenAI) -> None:
    assert "minilm" in [model.id for model in client.models.list()]


def test_grpc_through_tritonclient(server: ServerProcess, http: httpx.Client) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_target)
    try:
        tensor = grpcclient.InferInput("text", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([b"hello", b"word " * 300], dtype=object))
        result = client.infer("minilm", [tensor])
    finally:
        client.close()
    np.testing.assert_allclose(
        result.as_numpy("embedding")[:1], embed_v2(http, ["hello"]), atol=1e-6
    )
    parameters = result.get_response().parameters
    assert parameters["truncated"].int64_param == 1
    assert result.as_numpy("truncated").tolist() == [False, True]
