"""Fuzzing the edges security added, against a real server with TLS on both ports and inference
authentication on: garbage and mutated TLS handshakes on the HTTP and gRPC ports, malformed
and oversized bearer headers and gRPC metadata, and schemathesis over HTTPS with a token.
No answer is a 5xx (gRPC: INTERNAL or UNKNOWN), no connection hangs, and the server keeps
serving. Bounded by PITSTOP_FUZZ_EXAMPLES (default 25)."""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from pitstop.transports.openapi import document
from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.proto import inference_pb2_grpc as pb_grpc
from tests.security.pki import Authority
from tests.server import ServerProcess
from tests.transports.documented import DOCUMENTED_ENV, admin_headers, push_documented_models

EXAMPLES = int(os.environ.get("PITSTOP_FUZZ_EXAMPLES", "25"))
SETTINGS = settings(
    max_examples=4 * EXAMPLES,
    deadline=None,
    derandomize="PITSTOP_FUZZ_SEED" not in os.environ,
    suppress_health_check=list(HealthCheck),
    database=None,
)
GRPC_FINE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Authority) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    push_documented_models(home, tmp_path_factory.mktemp("src"))
    issued = pki.issue("localhost", server=True, stem="server")
    env = {
        **DOCUMENTED_ENV,
        "PITSTOP_TLS_CERT": str(issued.cert),
        "PITSTOP_TLS_KEY": str(issued.key),
        "PITSTOP_INFERENCE_AUTH": "on",
    }
    with ServerProcess(home, env, verify=ssl.create_default_context(cafile=pki.cert)) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess, pki: Authority) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=pki.cert)
    with httpx.Client(base_url=server.url, verify=context, timeout=15) as http:
        yield http


def client_hello(alpn: list[str] | None = None) -> bytes:
    """A real TLS ClientHello, as a client would send it first."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = client_hello()
HELLO_H2 = client_hello(["h2"])


def mutated(hello: bytes) -> st.SearchStrategy[bytes]:
    """The hello with bytes flipped, cut short, or with junk appended."""
    flips = st.lists(
        st.tuples(st.integers(0, len(hello) - 1), st.integers(1, 255)), min_size=1, max_size=8
    )

    def flip(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(hello)
        for at, mask in changes:
            data[at] ^= mask
        return bytes(data)

    return st.one_of(
        flips.map(flip),
        st.integers(1, len(hello) - 1).map(lambda n: hello[:n]),
        st.binary(min_size=1, max_size=4096).map(lambda junk: hello + junk),
        st.binary(min_size=1, max_size=4096),
        # A record header announcing more than it sends, or an absurd length.
        st.integers(0, 0xFFFF).map(lambda n: b"\x16\x03\x01" + n.to_bytes(2, "big") + b"\x01"),
    )


def send_raw(port: int, data: bytes) -> None:
    """Send ``data`` and read until the server closes or 5 s pass (a hang fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            while sock.recv(65536):
                assert time.monotonic() - started < 5, "the server kept the connection open"
        except (ConnectionResetError, BrokenPipeError):
            pass  # refused: the point
        except TimeoutError:
            pytest.fail(f"no answer and no close within 5 s for {data[:40]!r}")


@SETTINGS
@given(data=st.one_of(mutated(HELLO), mutated(HELLO_H2)), grpc_port=st.booleans())
def test_garbage_and_mutated_handshakes_are_refused_without_a_hang(
    server: ServerProcess, data: bytes, grpc_port: bool
) -> None:
    send_raw(server.grpc_port if grpc_port else server.port, data)


HEADER_CHARACTERS = [chr(c) for c in (*range(0x21, 0x7F), *range(0xA0, 0x100))] + [" "]
"""What an HTTP client can put in a header value (visible characters, obs-text, spaces)."""

bearer_values = st.one_of(
    st.text(st.sampled_from(HEADER_CHARACTERS), max_size=600).map(
        lambda s: ("Bearer " + s).strip()
    ),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40).map(
        lambda s: s + " " + "x" * 10
    ),
    st.integers(1, 40_000).map(lambda n: "Bearer " + "a" * n),
    st.just("Bearer"),
    st.just(""),
)


@SETTINGS
@given(value=bearer_values, path=st.sampled_from(["/v2/models/iris/infer", "/metrics", "/v2"]))
def test_malformed_and_oversized_bearer_headers_get_401_or_431(
    client: httpx.Client, value: str, path: str
) -> None:
    method = "POST" if path.endswith("infer") else "GET"
    response = client.request(
        method, path, headers={"authorization": value.encode("latin-1")}, json={}
    )
    assert response.status_code in (401, 431), (value[:80], response.status_code)
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()


@SETTINGS
@given(
    value=st.one_of(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=600),
        st.integers(1, 40_000).map(lambda n: "Bearer " + "b" * n),
    )
)
def test_malformed_and_oversized_grpc_metadata_is_refused_by_name(
    server: ServerProcess, pki: Authority, value: str
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.cert.read_bytes())
    with grpc.secure_channel(f"localhost:{server.grpc_port}", credentials) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelMetadata(
                pb.ModelMetadataRequest(name="iris"),
                metadata=(("authorization", value.strip()),),
                timeout=15,
            )
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
    assert code in GRPC_FINE, (value[:80], code)
    assert code is not grpc.StatusCode.OK  # none of these is a token


@pytest.mark.parametrize("excess", [1, 100, 1000, 3000])
def test_metadata_over_the_limit_is_always_refused(
    server: ServerProcess, pki: Authority, excess: int
) -> None:
    """gRPC's own limit is soft (some calls above it pass, at random): pitstop sets the hard
    one too, so every call over PITSTOP_MAX_HEADER_BYTES is refused."""
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.cert.read_bytes())
    with grpc.secure_channel(f"localhost:{server.grpc_port}", credentials) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ServerLive(
                    pb.ServerLiveRequest(),
                    metadata=(("x-padding", "p" * (16 * 1024 + excess)),),
                    timeout=15,
                )
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=15).live


schema = schemathesis.openapi.from_dict(document("fuzz-tls"))
schema.config.generation.update(
    max_examples=max(1, EXAMPLES // 3), deterministic=True, database="none"
)


@schema.parametrize()
@settings(
    max_examples=max(1, EXAMPLES // 3),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_documented_operations_over_tls_with_a_token_never_get_a_server_error(
    case: schemathesis.Case, server: ServerProcess, pki: Authority
) -> None:
    response = case.call(
        base_url=server.url, headers=admin_headers(server), timeout=15, verify=str(pki.cert)
    )
    case.validate_response(response, checks=[not_a_server_error])
    assert response.status_code < 500


def test_the_server_survived_and_serves(server: ServerProcess, client: httpx.Client) -> None:
    assert server.process is not None
    assert server.process.poll() is None, server.logs()[-2000:]
    assert client.get("/v2/health/ready").status_code == 200
    assert "Traceback" not in server.logs()
