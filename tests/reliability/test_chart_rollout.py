"""The chart's Deployment, run as Kubernetes would run it, on 127.0.0.1: a rolling update simulated.

The container's args, environment (Secrets and the downward API resolved as the kubelet would)
and probes are read from ``helm template`` output and run as local processes against PostgreSQL
and the S3 server. Then: the startup/readiness probe fails until the model is loaded (a 24 MB
artifact to download and verify) and passes after; a second pod comes up; the first is taken
out as the kubelet does — removed from the endpoints new connections pick, preStop sleep, SIGTERM
— while a client keeps requests flowing over keep-alive connections: nothing fails.

Two deliberate differences from a cluster: ``--host`` is 127.0.0.1 instead of the image's
0.0.0.0 (tests talk only to loopback), and the ports are free ones instead of 8080/8081.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitstop.registry import Registry
from pitstop.registry.artifact_cache import ArtifactCache
from pitstop.registry.s3_store import S3ArtifactStore
from tests import model_factory as mf
from tests.deploy.chart import one, render
from tests.reliability.conftest import url_through
from tests.s3_server import S3Server
from tests.server import free_port

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}
VALUES = {
    "shutdown": {"preStopSleepSeconds": 2, "graceSeconds": 1, "drainTimeoutSeconds": 10},
    "artifacts": {"existingSecret": "s3-creds", "addressingStyle": "path"},
}
PROPAGATION_S = 0.5
"""How long after the pod starts terminating new connections still reach it (endpoints lag)."""


@dataclass
class Pod:
    """One replica of the rendered Deployment, as a local process."""

    name: str
    process: subprocess.Popen[bytes]
    http_port: int
    probe_path: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def probe(self) -> int | None:
        try:
            return httpx.get(self.url + self.probe_path, timeout=1).status_code
        except httpx.TransportError:
            return None


def start_pod(container: dict[str, Any], secrets: dict[str, dict[str, str]], root: Path) -> Pod:
    """The container as the kubelet would start it, with the image's entrypoint
    (``tini -- pitstop``) as ``python -m pitstop``, volumes as folders under ``root``."""
    name = f"pitstop-{uuid.uuid4().hex[:5]}"
    http_port, grpc_port = free_port(), free_port()
    mounts = {m["mountPath"]: root / name / m["name"] for m in container["volumeMounts"]}
    env: dict[str, str] = {}
    for entry in container["env"]:
        source = entry.get("valueFrom", {})
        if "value" in entry:
            value = entry["value"]
        elif "secretKeyRef" in source:
            value = secrets[source["secretKeyRef"]["name"]][source["secretKeyRef"]["key"]]
        else:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            value = name
        for path, folder in mounts.items():  # the volumes' mount paths, here
            if value == path or value.startswith(path + "/"):
                folder.mkdir(parents=True, exist_ok=True)
                value = str(folder) + value[len(path) :]
        env[entry["name"]] = value
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = [str(a) for a in container["args"]]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--http-port") + 1] = str(http_port)
    args[args.index("--grpc-port") + 1] = str(grpc_port)
    assert ports == {"http": int(container["args"][4]), "grpc": int(container["args"][6])}
    probe = container["startupProbe"]["httpGet"]
    assert probe["port"] == "http"
    log = root / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pitstop", *args],
            env={k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")} | env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Pod(name, process, http_port, probe["path"], log)


@dataclass
class Clients:
    """Closed-loop clients over keep-alive connections, as behind a Service: a new connection
    goes to one of the current endpoints; a connection lives until the server closes it."""

    endpoints: list[str]
    threads: int = 6
    statuses: list[int | str] = field(default_factory=list)
    served_by: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Clients:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._running.append(thread)
        return self

    def _run(self, n: int) -> None:
        turn = n
        while not self._stop.is_set():
            with self._lock:
                endpoint = self.endpoints[turn % len(self.endpoints)]
            turn += 1
            with httpx.Client(base_url=endpoint, timeout=30) as client:
                for _ in range(20_000):
                    if self._stop.is_set():
                        return
                    try:
                        response = client.post("/v2/models/iris/infer", json=ROW)
                        outcome: int | str = response.status_code
                    except httpx.TransportError as exc:
                        outcome = type(exc).__name__
                    with self._lock:
                        self.statuses.append(outcome)
                        self.served_by[endpoint] = self.served_by.get(endpoint, 0) + 1
                    if outcome != 200 or response.headers.get("connection") == "close":
                        break  # reconnect, to the endpoints as they are now

    def remove(self, endpoint: str) -> None:
        with self._lock:
            self.endpoints.remove(endpoint)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(timeout=30)


def test_a_rolling_update_of_the_rendered_deployment_drops_nothing(
    tmp_path: Path, schema: tuple[str, int], s3: S3Server
) -> None:
    options, port = schema
    registry_url = url_through(port, options)
    prefix = f"chart-{uuid.uuid4().hex[:8]}"
    folder = mf.make_onnx_package(tmp_path / "package")
    (folder / "padding.bin").write_bytes(os.urandom(24 << 20))  # loading takes a moment
    store = S3ArtifactStore("models", prefix, ArtifactCache(tmp_path / "ci", 1 << 30),
                            client=s3.client())  # fmt: skip
    with Registry.open(registry_url, store=store) as registry:
        registry.push(folder, name="iris", aliases=["production"], actor="ci")

    artifacts = {"url": f"s3://models/{prefix}", "endpoint": s3.endpoint, "region": "us-east-1"}
    values = {
        **VALUES,
        "artifacts": {**VALUES["artifacts"], **artifacts},
        "env": {"PITSTOP_WARMUP_RUNS": "1"},
    }
    deployment = one(render(values), "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    s3_env = s3.env()
    secrets = {
        "pitstop-registry": {"url": registry_url},
        "s3-creds": {k: s3_env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    }
    prestop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace_period = pod_spec["terminationGracePeriodSeconds"]
    pods: list[Pod] = []
    clients: Clients | None = None
    try:
        old = start_pod(container, secrets, tmp_path)
        pods.append(old)
        seen = []
        deadline = time.monotonic() + 60
        while (status := old.probe()) != 200:  # the startup probe, every 20 ms
            assert old.process.poll() is None, old.log.read_text()[-3000:]
            assert time.monotonic() < deadline, old.log.read_text()[-3000:]
            seen.append(status)
            time.sleep(0.02)
        assert 503 in seen, seen  # listening, not ready: the model was still loading
        assert httpx.post(f"{old.url}/v2/models/iris/infer", json=ROW).status_code == 200

        clients = Clients([old.url]).start()
        new = start_pod(container, secrets, tmp_path)  # maxSurge 1: the new pod first
        pods.append(new)
        deadline = time.monotonic() + 60
        while new.probe() != 200:
            assert new.process.poll() is None, new.log.read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with clients._lock:
            clients.endpoints.append(new.url)  # ready: the Service sends it new connections
        time.sleep(1.0)

        # The old pod terminates: preStop sleep while the endpoints catch up, then SIGTERM.
        began = time.monotonic()
        time.sleep(PROPAGATION_S)
        clients.remove(old.url)
        time.sleep(prestop - PROPAGATION_S)
        answered_before_term = clients.served_by.get(old.url, 0)
        old.process.send_signal(signal.SIGTERM)
        code = old.process.wait(timeout=grace_period)
        assert code == 0, old.log.read_text()[-3000:]
        assert time.monotonic() - began < grace_period
        time.sleep(0.5)
        clients.stop()
    finally:
        if clients is not None:
            clients.stop()
        for pod in pods:
            if pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait(timeout=30)
    failed = [s for s in clients.statuses if s != 200]
    assert not failed, failed[:5]
    assert len(clients.statuses) > 200
    assert answered_before_term > 0  # kept-alive connections still reached the old pod
    assert clients.served_by[new.url] > 0
