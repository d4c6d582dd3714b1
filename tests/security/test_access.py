"""Access through a real server with inference authentication on: every REST route and every
gRPC method is authorized (a route added without it fails here), 401 vs 403 vs 429 with
Retry-After, per-token rate limits, expiry, denials in /metrics and the access log, and a
server that must not start refusing to."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from pitstop.engine import Engine
from pitstop.security.token import Authenticator, TokenFile
from pitstop.settings import Settings
from pitstop.transports.app import Host
from pitstop.transports.proto import inference_pb2 as pb
from tests import model_factory as mf
from tests.cli import run_process as cli
from tests.server import ServerProcess, free_port, open_registry, wait_for
from tests.transports.documented import served_routes

X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
PUBLIC_ROUTES = {
    ("/v2/health/live", "GET"), ("/v2/health/ready", "GET"), ("/ping", "GET"), ("/health", "GET"),
    ("/console", "GET"), ("/console/{name}", "GET"),  # static files: the data needs a token
}  # fmt: skip
PUBLIC_METHODS = {"ServerLive", "ServerReady"}
MODEL_FIELD = {  # gRPC requests and the field naming their model
    "ModelReady": "name", "ModelMetadata": "name", "ModelConfig": "name",
    "ModelStatistics": "name", "RepositoryModelLoad": "model_name",
    "RepositoryModelUnload": "model_name", "ModelInfer": "model_name",
}  # fmt: skip

pytestmark = pytest.mark.timeout(180)


def token(server: ServerProcess, *args: str) -> str:
    """A new token, once ``server`` knows it: the server reads tokens from the registry within
    its watch interval. The probe is a management call, which a token of any other scope is
    refused before its rate is charged (and which an unknown token gets 401 for)."""
    made = cli(server.home, "token", "create", *args)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    probe = f"{server.url}/v2/repository/models/no-such-model/unload"
    bearer = {"Authorization": f"Bearer {secret}"}
    assert wait_for(lambda: httpx.post(probe, headers=bearer).status_code != 401, 10)
    return secret


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("src")
    with open_registry(home) as registry:
        for name in ("alpha", "beta"):
            folder = mf.make_python_package(src / name)
            registry.push(folder, name=name, aliases=["production"], actor="t", trust_code=True)
    env = {
        "PITSTOP_INFERENCE_AUTH": "on", "PITSTOP_LOG_REQUESTS": "true",
        "PITSTOP_DEFAULT_MODEL": "alpha",  # MLflow's root /invocations serves alpha
    }  # fmt: skip
    with ServerProcess(home, env) as process:
        yield process


def concrete(path: str) -> str:
    return path.replace("{model}", "alpha").replace("{version}", "1").replace("{action}", "pause")


def test_every_rest_route_is_authorized(server: ServerProcess, tmp_path: Path) -> None:
    routes = served_routes(tmp_path)
    assert len(routes) > 25
    outsider = {"Authorization": f"Bearer {token(server, '--scope', 'infer:zzz')}"}
    unguarded, unscoped = [], []
    for path, method in routes:
        url = server.url + concrete(path)
        anonymous = httpx.request(method, url, json={}, timeout=10)
        public = (path, method) in PUBLIC_ROUTES
        if public != (anonymous.status_code != 401):
            unguarded.append((method, path, anonymous.status_code))
        if not public:
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
        # A token for another model is refused on every model route (the root /invocations
        # serves the default model, alpha).
        if "{model}" in path or path == "/invocations":
            refused = httpx.request(method, url, json={}, headers=outsider, timeout=10)
            if refused.status_code != 403:
                unscoped.append((method, path, refused.status_code))
    assert unguarded == []
    assert unscoped == []


def test_every_grpc_method_is_authorized(server: ServerProcess) -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    outsider = token(server, "--scope", "infer:zzz")
    unguarded, unscoped = [], []
    with grpc.insecure_channel(server.grpc_target) as channel:
        for method in service.methods:
            request_class = getattr(pb, method.input_type.name)
            request = request_class()
            field = MODEL_FIELD.get(method.name)
            if field is not None:
                setattr(request, field, "alpha")
            path = f"/{service.full_name}/{method.name}"
            streaming = method.client_streaming or method.server_streaming

            def call(
                metadata: tuple[tuple[str, str], ...],
                path: str = path,
                request: object = request,
                streaming: bool = streaming,
            ) -> grpc.StatusCode:
                try:
                    if streaming:
                        stub = channel.stream_stream(
                            path, request_serializer=lambda m: m.SerializeToString()
                        )
                        for _ in stub(iter([request]), metadata=metadata, timeout=10):
                            pass
                    else:
                        stub = channel.unary_unary(
                            path, request_serializer=lambda m: m.SerializeToString()
                        )
                        stub(request, metadata=metadata, timeout=10)
                except grpc.RpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            anonymous = call(())
            if anonymous is grpc.StatusCode.UNIMPLEMENTED:
                continue  # not served: no route to guard
            public = method.name in PUBLIC_METHODS
            if public != (anonymous is not grpc.StatusCode.UNAUTHENTICATED):
                unguarded.append((method.name, anonymous))
            if field is not None and not streaming:
                refused = call((("authorization", f"Bearer {outsider}"),))
                if refused is not grpc.StatusCode.PERMISSION_DENIED:
                    unscoped.append((method.name, refused))
    assert unguarded == []
    assert unscoped == []


def test_stream_infer_authorizes_each_request_on_its_model(server: ServerProcess) -> None:
    alpha_only = token(server, "--scope", "infer:alpha")
    path = "/inference.GRPCInferenceService/ModelStreamInfer"
    requests = []
    for name in ("alpha", "beta"):
        request = pb.ModelInferRequest(model_name=name)
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        tensor.contents.fp32_contents.extend([1, 2, 3, 4])
        requests.append(request)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = channel.stream_stream(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        answers = list(
            stub(iter(requests), metadata=(("authorization", f"Bearer {alpha_only}"),), timeout=10)
        )
    assert answers[0].error_message == ""
    assert answers[0].infer_response.model_name == "alpha"
    assert "may not infer on model 'beta'" in answers[1].error_message


def test_a_token_revoked_while_its_stream_is_open_stops_working_on_it(
    server: ServerProcess,
) -> None:
    secret = token(server, "streamer", "--scope", "infer")
    outgoing: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()

    def requests() -> Iterator[pb.ModelInferRequest]:
        while (request := outgoing.get(timeout=20)) is not None:
            yield request

    request = pb.ModelInferRequest(model_name="alpha")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])
    bearer = (("authorization", f"Bearer {secret}"),)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        answers = stub(requests(), metadata=bearer, timeout=30)
        outgoing.put(request)
        assert next(answers).error_message == ""
        assert cli(server.home, "token", "revoke", "streamer").returncode == 0
        infer = f"{server.url}/v2/models/alpha/infer"
        deadline = time.monotonic() + 5  # the server reads the registry within its interval
        while (
            httpx.post(infer, json=X, headers={"Authorization": f"Bearer {secret}"}).status_code
            != 401
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        outgoing.put(request)
        assert "unknown token" in next(answers).error_message
        outgoing.put(None)
        assert list(answers) == []


def test_openai_routes_take_one_unit_of_rate_and_list_only_permitted_models(
    server: ServerProcess,
) -> None:
    one = token(server, "--scope", "infer:alpha", "--rate", "0.5", "--burst", "1")
    embedded = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": "alpha", "input": "hi"},
        headers={"Authorization": f"Bearer {one}"},
    )  # fmt: skip
    # Through the gate (alpha is no embedding model: the route says so), not 429.
    assert embedded.status_code == 400, embedded.text
    assert "alpha" in embedded.json()["error"]["message"]

    def listed(scope: str) -> list[str]:
        headers = {"Authorization": f"Bearer {token(server, '--scope', scope)}"}
        answer = httpx.get(f"{server.url}/v1/models", headers=headers)
        assert answer.status_code == 200, answer.text
        return [row["id"] for row in answer.json()["data"]]

    assert listed("infer:alpha") == ["alpha"]
    assert listed("infer") == ["alpha", "beta"]
    assert listed("read") == []  # it may describe, not embed


def test_401_403_and_tokens_for_inference(server: ServerProcess) -> None:
    infer = f"{server.url}/v2/models/alpha/infer"
    missing = httpx.post(infer, json=X)
    assert missing.status_code == 401
    assert "Bearer" in missing.json()["error"]
    assert httpx.post(infer, json=X, headers={"Authorization": "Bearer nope"}).status_code == 401
    alpha = {"Authorization": f"Bearer {token(server, 'alpha-client', '--scope', 'infer:alpha')}"}
    answered = httpx.post(infer, json=X, headers=alpha)
    assert answered.status_code == 200, answered.text
    beta = httpx.post(f"{server.url}/v2/models/beta/infer", json=X, headers=alpha)
    assert beta.status_code == 403
    assert "token:alpha-client may not infer on model 'beta'" in beta.json()["error"]
    # The OpenAI route names its model in the body: the same decision.
    embeddings = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": "beta", "input": "hi"}, headers=alpha
    )
    assert embeddings.status_code == 403
    assert embeddings.json()["error"]["type"]
    # A metadata call clients make before inferring is allowed on that model only.
    assert httpx.get(f"{server.url}/v2/models/alpha", headers=alpha).status_code == 200
    assert httpx.get(f"{server.url}/v2/models/beta", headers=alpha).status_code == 403
    # The access log names the principal; never the secret.
    secret = alpha["Authorization"].split()[1]
    deadline = time.monotonic() + 5
    while '"principal": "token:alpha-client"' not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    logs = server.logs()
    assert "token:alpha-client" in logs
    assert secret not in logs


def test_a_token_over_its_rate_gets_429_while_another_is_unaffected(server: ServerProcess) -> None:
    infer = f"{server.url}/v2/models/alpha/infer"
    limited_token = token(server, "--scope", "infer", "--rate", "1", "--burst", "2")
    slow = {"Authorization": f"Bearer {limited_token}"}
    other = {"Authorization": f"Bearer {token(server, '--scope', 'infer')}"}
    with httpx.Client(timeout=10) as client:
        statuses = [client.post(infer, json=X, headers=slow) for _ in range(4)]
        assert [r.status_code for r in statuses[:2]] == [200, 200]
        limited = [r for r in statuses[2:] if r.status_code == 429]
        assert limited, [r.status_code for r in statuses]
        assert int(limited[0].headers["retry-after"]) >= 1
        assert "rate limit" in limited[0].json()["error"]
        assert all(client.post(infer, json=X, headers=other).status_code == 200 for _ in range(10))
        reader = {"Authorization": f"Bearer {token(server, '--scope', 'read')}"}
        metrics = client.get(f"{server.url}/metrics", headers=reader)
    assert metrics.status_code == 200
    assert 'pitstop_auth_denied_total{action="infer",reason="rate_limited"}' in metrics.text
    assert 'pitstop_auth_denied_total{action="infer",reason="unauthenticated"}' in metrics.text


def test_an_expired_token_is_refused(server: ServerProcess) -> None:
    brief = {"Authorization": f"Bearer {token(server, '--scope', 'infer', '--expires', '2s')}"}
    infer = f"{server.url}/v2/models/alpha/infer"
    deadline = time.monotonic() + 5  # the server reads new tokens within its watch interval
    while httpx.post(infer, json=X, headers=brief).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(2.1)
    refused = httpx.post(infer, json=X, headers=brief)
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]
    listed = cli(server.home, "token", "list", "--json")
    assert any(row["expires_at"] for row in json.loads(listed.stdout))


def test_bad_token_options_name_the_option(server: ServerProcess) -> None:
    bad_scope = cli(server.home, "token", "create", "--scope", "infer:a b")
    assert bad_scope.returncode != 0
    assert "--scope" in bad_scope.stderr
    bad_expiry = cli(server.home, "token", "create", "--expires", "soon")
    assert bad_expiry.returncode != 0
    assert "--expires" in bad_expiry.stderr
    for rate in ("inf", "nan", "0"):
        bad_rate = cli(server.home, "token", "create", "--rate", rate)
        assert bad_rate.returncode != 0
        assert "--rate" in bad_rate.stderr


def test_an_open_server_reachable_from_elsewhere_refuses_to_start(tmp_path: Path) -> None:
    # Refused before anything binds: nothing listens on a non-loopback address here.
    started = time.monotonic()
    refused = subprocess.run(
        [sys.executable, "-m", "pitstop", "serve", "--host", "0.0.0.0",
         "--http-port", str(free_port()), "--grpc-port", str(free_port())],
        env={"PITSTOP_HOME": str(tmp_path), "PITSTOP_INFERENCE_AUTH": "off",
             "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "refusing to start" in refused.stderr
    assert "--insecure" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert time.monotonic() - started < 30


def test_a_client_certificate_mapping_that_does_not_parse_stops_the_start(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "pitstop", "serve", "--http-port", str(free_port()),
         "--grpc-port", str(free_port())],
        env={"PITSTOP_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
             "PITSTOP_TLS_CLIENT_SCOPES": json.dumps({"billing": ["infer:fraud", "write"]})},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "PITSTOP_TLS_CLIENT_SCOPES['billing']" in refused.stderr
    assert "'write'" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "admin.token").exists()  # refused before anything was created


def test_an_insecure_server_says_so_in_its_metadata(tmp_path: Path) -> None:
    """In process, without listening: the metadata a server told --insecure answers."""
    settings = Settings(home=tmp_path, host="0.0.0.0", inference_auth="off", insecure=True)

    async def metadata() -> dict[str, object]:
        async with Engine(settings) as engine:
            host = Host(engine, settings, Authenticator(TokenFile(tmp_path)))
            try:
                transport = httpx.ASGITransport(app=host.asgi)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    answer = await client.get("/v2")
                    return dict(answer.json())
            finally:
                host.codecs.close()

    described = asyncio.run(metadata())
    assert "without TLS" in str(described["pitstop_insecure"])
