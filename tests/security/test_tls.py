"""TLS and mutual TLS on both ports, with real clients: curl and httpx over HTTPS, tritonclient
HTTP with ``ssl=True`` and gRPC over a secure channel, a handshake without a client
certificate refused under mTLS, client certificates mapped to scopes, and a rotated
certificate served without a restart."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests import model_factory as mf
from tests.security.pki import Authority, Issued, serial_of, serial_of_der
from tests.server import ServerProcess, open_registry, wait_for

X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}

pytestmark = pytest.mark.timeout(120)


def client_context(ca: Path, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def push_models(home: Path, src: Path) -> None:
    with open_registry(home) as registry:
        for name in ("alpha", "beta"):
            folder = mf.make_python_package(src / name)
            registry.push(folder, name=name, aliases=["production"], actor="t", trust_code=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Authority
) -> Iterator[tuple[ServerProcess, Issued]]:
    home = tmp_path_factory.mktemp("home")
    push_models(home, tmp_path_factory.mktemp("src"))
    issued = pki.issue("localhost", server=True, stem="server")
    env = {"PITSTOP_TLS_CERT": str(issued.cert), "PITSTOP_TLS_KEY": str(issued.key)}
    with ServerProcess(home, env, verify=client_context(pki.cert)) as server:
        yield server, issued


def presented_serial(port: int, ca: Path, alpn: list[str] | None = None) -> int:
    context = client_context(ca)
    if alpn:
        context.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of_der(der)


def test_httpx_and_curl_infer_over_tls_with_the_ca(
    tls_server: tuple[ServerProcess, Issued], pki: Authority
) -> None:
    server, _ = tls_server
    assert server.url.startswith("https://")
    answer = httpx.post(
        f"{server.url}/v2/models/alpha/infer", json=X, verify=client_context(pki.cert)
    )
    assert answer.status_code == 200, answer.text
    curl = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(pki.cert), "-H",
         "content-type: application/json", "-d", orjson.dumps(X).decode(),
         f"https://localhost:{server.port}/v2/models/alpha/infer"],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert curl.returncode == 0, curl.stderr
    assert orjson.loads(curl.stdout)["model_name"] == "alpha"
    # Plain HTTP on the TLS port gets no answer, and a client without the CA refuses the server.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/v2/health/live", timeout=3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live", timeout=3)


def test_tritonclient_http_with_ssl(
    tls_server: tuple[ServerProcess, Issued], pki: Authority
) -> None:
    server, _ = tls_server
    client = httpclient.InferenceServerClient(
        f"localhost:{server.port}", ssl=True, ssl_options={"ca_certs": str(pki.cert)}
    )
    try:
        assert client.is_server_ready()
        tensor = httpclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        result = client.infer("alpha", [tensor])
        assert result.as_numpy("y") is not None
    finally:
        client.close()


def test_tritonclient_grpc_over_a_secure_channel(
    tls_server: tuple[ServerProcess, Issued], pki: Authority
) -> None:
    server, _ = tls_server
    client = grpcclient.InferenceServerClient(
        f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(pki.cert)
    )
    try:
        assert client.is_server_ready()
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        result = client.infer("alpha", [tensor])
        assert result.as_numpy("y") is not None
    finally:
        client.close()
    # An insecure channel to the TLS port fails rather than talking plaintext.
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=2)


def test_a_rotated_certificate_is_served_without_a_restart(
    tls_server: tuple[ServerProcess, Issued], pki: Authority
) -> None:
    server, issued = tls_server
    pid = server.process.pid if server.process else None
    old = serial_of(issued.cert.read_bytes())
    assert presented_serial(server.port, pki.cert) == old
    assert presented_serial(server.grpc_port, pki.cert, ["h2"]) == old
    # A half-written pair (a new certificate, the old key) is refused and the old one serves.
    fresh = pki.issue("localhost", server=True, stem="server-next")
    staged = issued.cert.with_suffix(".tmp")
    shutil.copyfile(fresh.cert, staged)
    os.replace(staged, issued.cert)
    time.sleep(2.5)
    assert presented_serial(server.port, pki.cert) == old
    assert "cannot be used" in server.logs()
    # The key arrives: the new certificate serves new connections on both ports.
    shutil.copyfile(fresh.key, issued.key.with_suffix(".tmp"))
    os.replace(issued.key.with_suffix(".tmp"), issued.key)
    new = serial_of(fresh.cert.read_bytes())
    assert wait_for(lambda: presented_serial(server.port, pki.cert) == new, timeout=10)
    assert wait_for(lambda: presented_serial(server.grpc_port, pki.cert, ["h2"]) == new, 10)
    assert server.process is not None
    assert server.process.pid == pid  # the same process
    answer = httpx.post(
        f"{server.url}/v2/models/alpha/infer", json=X, verify=client_context(pki.cert)
    )
    assert answer.status_code == 200


# -- mutual TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Authority
) -> Iterator[tuple[ServerProcess, Issued, Issued]]:
    home = tmp_path_factory.mktemp("home")
    push_models(home, tmp_path_factory.mktemp("src"))
    issued = pki.issue("localhost", server=True, stem="mtls-server")
    billing = pki.issue("billing", server=False)
    other = pki.issue("other", server=False)
    env = {
        "PITSTOP_TLS_CERT": str(issued.cert),
        "PITSTOP_TLS_KEY": str(issued.key),
        "PITSTOP_TLS_CLIENT_CA": str(pki.cert),
        "PITSTOP_INFERENCE_AUTH": "on",
        "PITSTOP_TLS_CLIENT_SCOPES": orjson.dumps({"billing": ["infer:alpha"]}).decode(),
    }
    with ServerProcess(home, env, verify=client_context(pki.cert, billing)) as server:
        yield server, billing, other


def test_mtls_without_a_client_certificate_is_refused_at_the_handshake(
    mtls_server: tuple[ServerProcess, Issued, Issued], pki: Authority
) -> None:
    server, _, _ = mtls_server
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(f"{server.url}/v2/health/live", verify=client_context(pki.cert), timeout=5)
    # A certificate from another CA is refused the same way.
    stranger_ca = Authority(pki.folder / "stranger", name="stranger CA")
    stranger = stranger_ca.issue("billing", server=False)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(
            f"{server.url}/v2/health/live",
            verify=client_context(pki.cert, stranger),
            timeout=5,
        )
    client = grpcclient.InferenceServerClient(
        f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(pki.cert)
    )
    try:
        with pytest.raises(Exception, match=r"(?i)unavailable|handshake|ssl|connect"):
            client.is_server_live(client_timeout=3)
    finally:
        client.close()


def test_a_client_certificate_is_the_principal_its_scopes_name(
    mtls_server: tuple[ServerProcess, Issued, Issued], pki: Authority
) -> None:
    server, billing, other = mtls_server
    as_billing = client_context(pki.cert, billing)
    ok = httpx.post(f"{server.url}/v2/models/alpha/infer", json=X, verify=as_billing)
    assert ok.status_code == 200, ok.text
    denied = httpx.post(f"{server.url}/v2/models/beta/infer", json=X, verify=as_billing)
    assert denied.status_code == 403
    assert "cert:billing" in denied.json()["error"]
    # A verified certificate with no mapping is anonymous: inference is closed here.
    unmapped = httpx.post(
        f"{server.url}/v2/models/alpha/infer", json=X, verify=client_context(pki.cert, other)
    )
    assert unmapped.status_code == 401
    # gRPC: the same certificate, the same decisions.
    client = grpcclient.InferenceServerClient(
        f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(pki.cert),
        private_key=str(billing.key), certificate_chain=str(billing.cert),
    )  # fmt: skip
    try:
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        assert client.infer("alpha", [tensor]).as_numpy("y") is not None
        with pytest.raises(Exception, match=r"PERMISSION_DENIED"):
            client.infer("beta", [tensor])
    finally:
        client.close()
    assert "denied cert:billing" in server.logs()
