"""/openapi.json is true: every route the app serves is in it, and every status it documents for
an operation is one that operation returns: an example request per (route, method, status),
sent to a real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitstop.transports.openapi import document
from tests.server import ServerProcess, open_registry
from tests.transports.documented import (
    MAX_REQUEST_BYTES,
    admin_headers,
    ailing_server,
    healthy_server,
    scoped_headers,
    served_routes,
)

IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
M, V = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
ADMIN = "/v2/pitstop/models/{model}"


@dataclass(frozen=True)
class Example:
    path: str
    """The documented path template."""
    method: str
    status: int
    url: str
    server: str = "healthy"
    auth: str = ""
    """'' none, 'admin', 'read' (read scope only), 'infer' (infer scope only), 'bad'."""
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    crowd: tuple[str, Any, int] | None = None
    """(url, json, n): n requests in flight while this one is sent."""
    prepare: Callable[[ServerProcess], None] | None = None


def _binary_non_utf8() -> tuple[bytes, dict[str, str]]:
    header = (
        b'{"inputs":[{"name":"t","shape":[1,1],"datatype":"BYTES",'
        b'"parameters":{"binary_data_size":6}}]}'
    )
    return header + b"\x02\0\0\0\xff\xfe", {"Inference-Header-Content-Length": str(len(header))}


def _production_to_2(server: ServerProcess) -> None:
    with open_registry(server.home) as registry:
        registry.set_alias("iris", "production", 2, actor="test")


def infer_examples(path: str, url: str) -> list[Example]:
    """``url`` addresses iris (version 1 where versioned); other models by replacing 'iris'."""
    binary, binary_headers = _binary_non_utf8()
    slow = url.replace("iris", "slow")
    return [
        Example(path, "POST", 200, url, json=IRIS),
        Example(path, "POST", 400, url, json={"inputs": [{**IRIS["inputs"][0], "shape": [1, 3]}]}),
        Example(path, "POST", 404, url.replace("iris", "nope"), json=IRIS),
        Example(path, "POST", 413, url, content=b" " * (MAX_REQUEST_BYTES + 1)),
        Example(path, "POST", 429, slow, json=X, crowd=(slow, X, 4)),
        Example(
            path, "POST", 501, url.replace("iris", "text"), content=binary, headers=binary_headers
        ),
        Example(path, "POST", 503, url.replace("iris", "broken"), "ailing", json=X),
        Example(
            path,
            "POST",
            504,
            slow,
            json={**X, "parameters": {"timeout": 50_000}},
            crowd=(slow, X, 1),
        ),
    ]


def generate_examples(path: str, url: str) -> list[Example]:
    """Triton's generate extension: flat JSON bodies, otherwise as :func:`infer_examples`."""
    slow = url.replace("iris", "slow")
    slow_infer = slow.rsplit("/", 1)[0] + "/infer"  # the crowd: plain inference
    flat_x = {"x": [[1, 2, 3, 4]]}
    return [
        Example(path, "POST", 200, url, json={"input": [[1, 2, 3, 4]]}),
        Example(path, "POST", 400, url, json={"input": [[1, 2, 3]]}),
        Example(path, "POST", 404, url.replace("iris", "nope"), json=flat_x),
        Example(path, "POST", 413, url, content=b" " * (MAX_REQUEST_BYTES + 1)),
        Example(path, "POST", 429, slow, json=flat_x, crowd=(slow_infer, X, 4)),
        Example(path, "POST", 503, url.replace("iris", "broken"), "ailing", json=flat_x),
        Example(
            path, "POST", 504, slow, json={**flat_x, "parameters": {"timeout": 50_000}},
            crowd=(slow_infer, X, 1),
        ),
    ]  # fmt: skip


def examples() -> list[Example]:
    out = [
        Example("/v2/health/live", "GET", 200, "/v2/health/live"),
        Example("/v2/health/ready", "GET", 200, "/v2/health/ready"),
        Example("/v2/health/ready", "GET", 503, "/v2/health/ready", "ailing"),
        Example("/v2", "GET", 200, "/v2"),
        Example("/v2/", "GET", 200, "/v2/"),
        Example("/v2/models/stats", "GET", 200, "/v2/models/stats"),
        Example("/v2/repository/index", "POST", 200, "/v2/repository/index"),
        Example("/v2/repository/index", "POST", 400, "/v2/repository/index", content=b"{"),
        Example("/openapi.json", "GET", 200, "/openapi.json"),
        Example("/metrics", "GET", 200, "/metrics"),
        Example("/metrics", "GET", 404, "/metrics", "ailing"),
        Example("/v1/models", "GET", 200, "/v1/models"),
    ]
    for path, url in ((M, "/v2/models/iris"), (V, "/v2/models/iris/versions/1")):
        broken = url.replace("iris", "broken")
        unknown = url.replace("iris", "nope") if path == M else url.replace("/1", "/%C2%B9")
        for suffix in ("", "/ready", "/config"):
            out += [
                Example(path + suffix, "GET", 200, url + suffix),
                Example(path + suffix, "GET", 404, unknown + suffix),
                Example(path + suffix, "GET", 503, broken + suffix, "ailing"),
            ]
        out += [
            Example(path + "/stats", "GET", 200, url + "/stats"),
            Example(path + "/stats", "GET", 404, unknown + "/stats"),
        ]
        out += infer_examples(path + "/infer", url + "/infer")
        for suffix in ("/generate", "/generate_stream"):
            out += generate_examples(path + suffix, url + suffix)
    for action in ("load", "unload"):
        path = f"/v2/repository/models/{{model}}/{action}"
        url = f"/v2/repository/models/iris/{action}"
        out += [
            Example(path, "POST", 400, url, auth="admin", content=b"{"),
            Example(path, "POST", 401, url, auth="bad"),
            Example(path, "POST", 403, url, auth="read"),
            Example(path, "POST", 404, url.replace("iris", "nope"), auth="admin"),
        ]
    out += [
        Example(
            "/v2/repository/models/{model}/load",
            "POST",
            200,
            "/v2/repository/models/iris/load",
            auth="admin",
        ),
        Example(
            "/v2/repository/models/{model}/load",
            "POST",
            503,
            "/v2/repository/models/broken/load",
            "ailing",
            auth="admin",
        ),
        Example(
            "/v2/repository/models/{model}/unload",
            "POST",
            200,
            "/v2/repository/models/iris/unload",
            "ailing",
            auth="admin",
        ),
    ]
    out += management_examples()
    embeddings = "/v1/embeddings"
    out += [
        Example(embeddings, "POST", 200, embeddings, json={"model": "embed", "input": "hello"}),
        Example(embeddings, "POST", 400, embeddings, json={"model": "embed", "input": []}),
        Example(embeddings, "POST", 404, embeddings, json={"model": "nope", "input": "x"}),
        Example(embeddings, "POST", 413, embeddings, content=b" " * (MAX_REQUEST_BYTES + 1)),
        Example(
            embeddings,
            "POST",
            429,
            embeddings,
            json={"model": "embed", "input": "slow"},
            crowd=(embeddings, {"model": "embed", "input": "slow"}, 4),
        ),
        Example(
            embeddings, "POST", 503, embeddings, "ailing", json={"model": "broken", "input": "x"}
        ),
    ]
    out += scoring_examples()
    out += shared_memory_examples()
    return out


SHM_OBJECT = Path("/dev/shm/pitstop_openapi_r")


def shared_memory_examples() -> list[Example]:
    """Registering needs a real shm object: 400 for a key that has none is the documented error;
    the success path is tests/transports/test_shared_memory.py's."""
    out = []
    for kind in ("system", "cuda"):
        base = f"/v2/{kind}sharedmemory"
        named = base + "/region/{name}"
        out += [
            Example(base + "/status", "GET", 200, base + "/status"),
            Example(named + "/status", "GET", 404, base + "/region/none/status"),
            Example(base + "/unregister", "POST", 200, base + "/unregister"),
        ]
    system, cuda = "/v2/systemsharedmemory", "/v2/cudasharedmemory"
    out += [
        Example(
            system + "/region/{name}/register",
            "POST",
            400,
            system + "/region/r/register",
            json={"key": "/pitstop_openapi_none", "byte_size": 8},
        ),
        Example(
            system + "/region/{name}/register",
            "POST",
            200,
            system + "/region/r/register",
            json={"key": "/pitstop_openapi_r", "byte_size": 8},
            prepare=lambda _server: SHM_OBJECT.write_bytes(bytes(8)),
        ),
        Example(
            system + "/region/{name}/status",
            "GET",
            200,
            system + "/region/r/status",
            prepare=lambda _server: SHM_OBJECT.unlink(),  # still mapped: the region stays
        ),
        Example(system + "/region/{name}/unregister", "POST", 200, system + "/region/r/unregister"),
        Example(system + "/region/{name}/unregister", "POST", 404, system + "/region/r/unregister"),
        Example(
            cuda + "/region/{name}/register",
            "POST",
            400,
            cuda + "/region/g/register",
            json={"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 8},
        ),
        Example(cuda + "/region/{name}/unregister", "POST", 200, cuda + "/region/g/unregister"),
    ]
    return out


def scoring_examples() -> list[Example]:
    """MLflow's scoring protocol and KServe V1 on iris (ONNX, input FP32 [-1, 4])."""
    rows = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    csv = {"content-type": "text/csv"}
    model, versioned = "/v2/models/{model}/invocations", "/v2/models/{model}/versions/{version}"
    versioned += "/invocations"
    out = []
    for path, url in (
        ("/invocations", "/invocations"),
        (model, "/v2/models/iris/invocations"),
        (versioned, "/v2/models/iris/versions/1/invocations"),
    ):
        out += [
            Example(path, "POST", 200, url, json=rows),
            Example(path, "POST", 400, url, json={"instances": [[1, 2]]}),
            Example(path, "POST", 415, url, content=b"1,2", headers={"content-type": "text/x"}),
        ]
    out += [
        Example("/invocations", "POST", 404, "/invocations", "ailing", json=rows),
        Example(model, "POST", 404, "/v2/models/nope/invocations", json=rows),
        Example(
            model,
            "POST",
            413,
            "/v2/models/iris/invocations",
            content=b" " * (MAX_REQUEST_BYTES + 1),
        ),
        Example(
            model,
            "POST",
            503,
            "/v2/models/broken/invocations",
            "ailing",
            content=b"a\n1\n",
            headers=csv,
        ),
        Example(versioned, "POST", 404, "/v2/models/iris/versions/9/invocations", json=rows),
        Example("/ping", "GET", 200, "/ping"),
        Example("/health", "GET", 200, "/health"),
        Example("/ping", "GET", 503, "/ping", "ailing"),
        Example("/health", "GET", 503, "/health", "ailing"),
        Example("/version", "GET", 200, "/version"),
    ]
    predict, status = "/v1/models/{model}:predict", "/v1/models/{model}"
    out += [
        Example(predict, "POST", 200, "/v1/models/iris:predict", json=rows),
        Example(predict, "POST", 400, "/v1/models/iris:predict", json={"rows": []}),
        Example(predict, "POST", 404, "/v1/models/nope:predict", json=rows),
        Example(
            predict, "POST", 413, "/v1/models/iris:predict", content=b" " * (MAX_REQUEST_BYTES + 1)
        ),
        Example(predict, "POST", 503, "/v1/models/broken:predict", "ailing", json=rows),
        Example(status, "GET", 200, "/v1/models/iris"),
        Example(status, "GET", 404, "/v1/models/nope"),
        Example(status, "GET", 503, "/v1/models/broken", "ailing"),
    ]
    return out


def management_examples() -> list[Example]:
    traffic, iris = ADMIN + "/traffic", "/v2/pitstop/models/iris"
    whole = {"arms": [{"target": "production", "weight": 100}]}
    deploy = {"version": 2, "steps": [50, 100], "interval_s": 3600}
    out = [
        Example(traffic, "GET", 200, iris + "/traffic", auth="read"),
        Example(traffic, "GET", 401, iris + "/traffic"),
        Example(traffic, "GET", 403, iris + "/traffic", auth="infer"),
        Example(traffic, "GET", 404, "/v2/pitstop/models/nope/traffic", auth="read"),
        Example(traffic, "PUT", 200, iris + "/traffic", auth="admin", json=whole),
        Example(
            traffic,
            "PUT",
            400,
            iris + "/traffic",
            auth="admin",
            json={"arms": [{"target": "production", "weight": 50}]},
        ),
        Example(traffic, "PUT", 401, iris + "/traffic", json=whole),
        Example(traffic, "PUT", 403, iris + "/traffic", auth="read", json=whole),
        Example(traffic, "PUT", 404, "/v2/pitstop/models/nope/traffic", auth="admin", json=whole),
        Example(
            ADMIN + "/deploy", "POST", 400, iris + "/deploy", auth="admin", json={"version": "x"}
        ),
        Example(ADMIN + "/deploy", "POST", 401, iris + "/deploy", json=deploy),
        Example(ADMIN + "/deploy", "POST", 403, iris + "/deploy", auth="read", json=deploy),
        Example(
            ADMIN + "/deploy", "POST", 404, iris + "/deploy", auth="admin", json={"version": 9}
        ),
        Example(ADMIN + "/deploy", "POST", 200, iris + "/deploy", auth="admin", json=deploy),
        Example(ADMIN + "/deploy", "POST", 409, iris + "/deploy", auth="admin", json=deploy),
    ]
    action = ADMIN + "/rollout/{action}"
    out += [
        Example(action, "POST", 200, iris + "/rollout/pause", auth="admin"),
        Example(action, "POST", 409, iris + "/rollout/pause", auth="admin"),
        Example(action, "POST", 400, iris + "/rollout/resume", auth="admin", content=b"{"),
        Example(action, "POST", 401, iris + "/rollout/resume"),
        Example(action, "POST", 403, iris + "/rollout/resume", auth="read"),
        Example(action, "POST", 404, iris + "/rollout/stop", auth="admin"),
        Example(action, "POST", 200, iris + "/rollout/abort", auth="admin"),
    ]
    rollback = ADMIN + "/rollback"
    out += [
        Example(rollback, "POST", 404, iris + "/rollback", auth="admin"),  # no earlier version
        Example(rollback, "POST", 200, iris + "/rollback", auth="admin", prepare=_production_to_2),
        Example(rollback, "POST", 400, iris + "/rollback", auth="admin", content=b"{"),
        Example(rollback, "POST", 401, iris + "/rollback"),
        Example(rollback, "POST", 403, iris + "/rollback", auth="read"),
    ]
    drift, cost = ADMIN + "/drift", "/v2/pitstop/cost"
    out += [
        Example(drift, "GET", 200, iris + "/drift", auth="read"),
        Example(drift, "GET", 401, iris + "/drift"),
        Example(drift, "GET", 403, iris + "/drift", auth="infer"),
        Example(drift, "GET", 404, "/v2/pitstop/models/nope/drift", auth="read"),
        Example(cost, "GET", 200, cost + "?window_s=60", auth="read"),
        Example(cost, "GET", 400, cost + "?window_s=nan", auth="read"),
        Example(cost, "GET", 401, cost),
        Example(cost, "GET", 403, cost, auth="infer"),
        Example(cost, "GET", 404, cost, "ailing", auth="read"),
    ]
    model = "/v2/models/{model}"
    answer = {"id": "openapi-example", "reward": 1}
    out += [
        Example(model + "/feedback", "POST", 200, "/v2/models/iris/feedback", json=answer,
                prepare=_predict_with_id),
        Example(model + "/feedback", "POST", 400, "/v2/models/iris/feedback", json={"id": "x"}),
        Example(model + "/feedback", "POST", 404, "/v2/models/iris/feedback",
                json={"id": "never-made", "reward": 1}),
    ]  # fmt: skip
    for route, good, bad in (
        ("/outcomes", "", "?since=yesterday"),
        ("/ab", "?arms=production,1", "?alpha=2"),
    ):
        out += [
            Example(model + route, "GET", 200, "/v2/models/iris" + route + good, auth="read"),
            Example(model + route, "GET", 400, "/v2/models/iris" + route + bad, auth="read"),
            Example(model + route, "GET", 401, "/v2/models/iris" + route),
            Example(model + route, "GET", 403, "/v2/models/iris" + route, auth="infer"),
            Example(model + route, "GET", 404, "/v2/models/nope" + route, auth="read"),
        ]
    out += catalog_examples()
    return out


def catalog_examples() -> list[Example]:
    models = "/v2/pitstop/models/{model}"
    out = []
    for route in ("/v2/pitstop/whoami", "/v2/pitstop/overview", "/v2/pitstop/live"):
        out += [
            Example(route, "GET", 200, route, auth="read"),
            Example(route, "GET", 401, route),
            Example(route, "GET", 403, route, auth="infer"),
        ]
    live = "/v2/pitstop/live"
    out.append(Example(live, "GET", 400, live + "?since=nan", auth="read"))
    for route, bad in (("/versions", None), ("/history", "?limit=0")):
        out += [
            Example(models + route, "GET", 200, "/v2/pitstop/models/iris" + route, auth="read"),
            Example(models + route, "GET", 401, "/v2/pitstop/models/iris" + route),
            Example(models + route, "GET", 403, "/v2/pitstop/models/iris" + route, auth="infer"),
            Example(models + route, "GET", 404, "/v2/pitstop/models/nope" + route, auth="read"),
        ]
        if bad:
            out.append(
                Example(
                    models + route, "GET", 400, "/v2/pitstop/models/iris" + route + bad, auth="read"
                )
            )
    alias, staging = models + "/aliases/{alias}", "/v2/pitstop/models/iris/aliases/staging"
    one = {"version": 1, "reason": "openapi example"}
    out += [
        Example(alias, "PUT", 200, staging, auth="admin", json=one),
        Example(alias, "PUT", 400, staging, auth="admin", json={"version": "1"}),
        Example(alias, "PUT", 401, staging, json=one),
        Example(alias, "PUT", 403, staging, auth="read", json=one),
        Example(
            alias, "PUT", 404, "/v2/pitstop/models/nope/aliases/staging", auth="admin", json=one
        ),
        Example("/console", "GET", 200, "/console"),
        Example("/console/{name}", "GET", 200, "/console/console.js"),
        Example("/console/{name}", "GET", 404, "/console/secrets.txt"),
    ]
    return out


def _predict_with_id(server: ServerProcess) -> None:
    """A prediction with the id the feedback example names."""
    body = {
        "id": "openapi-example",
        "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5, 3, 1, 0]}],
    }
    answer = httpx.post(f"{server.url}/v2/models/iris/infer", json=body)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    with (
        healthy_server(tmp_path_factory.mktemp("healthy")) as healthy,
        ailing_server(tmp_path_factory.mktemp("ailing")) as ailing,
    ):
        yield {"healthy": healthy, "ailing": ailing}


def auth_headers(server: ServerProcess, auth: str) -> dict[str, str]:
    if auth == "admin":
        return admin_headers(server)
    if auth == "read":
        return scoped_headers(server, "reader", ["read"])
    if auth == "infer":
        return scoped_headers(server, "inferrer", ["infer"])
    return {"Authorization": "Bearer not-a-token"} if auth == "bad" else {}


def send(server: ServerProcess, example: Example) -> httpx.Response:
    headers = {**auth_headers(server, example.auth), **example.headers}
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        return client.request(
            example.method,
            example.url,
            json=example.json,
            content=example.content,
            headers=headers,
        )


def send_crowded(server: ServerProcess, example: Example) -> httpx.Response:
    if example.crowd is None:
        return send(server, example)
    url, body, count = example.crowd
    crowd = [
        threading.Thread(target=lambda: httpx.post(server.url + url, json=body, timeout=30))
        for _ in range(count)
    ]
    for thread in crowd:
        thread.start()
    time.sleep(0.15)  # all in flight: one running, the rest queued
    try:
        return send(server, example)
    finally:
        for thread in crowd:
            thread.join(30)


def documented(described: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {
        (path, method.upper(), int(status))
        for path, operations in described["paths"].items()
        for method, operation in operations.items()
        for status in operation["responses"]
    }


def test_every_route_of_the_app_is_documented_and_nothing_else(tmp_path: Path) -> None:
    served = set(served_routes(tmp_path))
    paths = document("test")["paths"]
    described = {(path, method.upper()) for path, ops in paths.items() for method in ops}
    assert served == described


def test_every_documented_status_is_returned_by_its_example(
    servers: dict[str, ServerProcess],
) -> None:
    served = httpx.get(servers["healthy"].url + "/openapi.json").json()
    cases = examples()
    assert {(e.path, e.method, e.status) for e in cases} == documented(served)
    wrong = []
    for example in cases:
        server = servers[example.server]
        if example.prepare is not None:
            example.prepare(server)
        response = send_crowded(server, example)
        if response.status_code != example.status:
            wrong.append(
                (
                    example.method,
                    example.url,
                    example.status,
                    response.status_code,
                    response.text[:200],
                )
            )
            continue
        documented_as = served["paths"][example.path][example.method.lower()]["responses"]
        reference = documented_as[str(example.status)].get("$ref", "")
        if reference.startswith("#/components/responses/MLflow"):  # MLflow's error shape
            assert response.json()["error_code"], example
            assert response.json()["message"], example
        elif reference:  # an error: {"error": "..."}
            assert response.headers["content-type"] == "application/json", example
            assert response.json()["error"], example
    assert not wrong, "\n".join(map(str, wrong))
