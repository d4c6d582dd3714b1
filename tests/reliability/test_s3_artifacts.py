"""Replicas load their versions from a real S3-compatible server (SeaweedFS on 127.0.0.1): a
version pushed from another host is served; with the store cut off, or an object tampered with,
the new version is FAILED with the reason and the old one keeps answering every request.

The registry is one SQLite file both the CLI (the "laptop", with its own home) and the server
(the replica, with its own home and artifact cache) open; S3 is reached through a TCP proxy the
test cuts and restores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import model_factory as mf
from tests.s3_server import Proxy, S3Server
from tests.server import ServerProcess, wait_for

pytestmark = pytest.mark.timeout(180)

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[Proxy]:
    opened = Proxy(s3.port)
    try:
        yield opened
    finally:
        opened.close()


class Site:
    """One registry and one bucket prefix, seen from a laptop (CLI) and a replica (server)."""

    def __init__(self, root: Path, s3: S3Server, proxy: Proxy) -> None:
        self.root = root
        self.prefix = f"site-{uuid.uuid4().hex[:8]}"
        self.env = {
            **s3.env(proxy.url),
            "PITSTOP_REGISTRY_URL": f"sqlite:///{root / 'registry.db'}",
            "PITSTOP_ARTIFACTS_URL": f"s3://models/{self.prefix}",
            "PITSTOP_ACTOR": "ci",
            "PITSTOP_LOAD_RETRIES": "1",
            "PITSTOP_LOAD_RETRY_BACKOFF_S": "0.1",
            "PITSTOP_CACHE_MAX_BYTES": "1",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pitstop", *args],
            env={**os.environ, **self.env, "PITSTOP_HOME": str(self.root / "laptop")},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def cli(self, *args: str) -> Any:
        """``pitstop ARGS``; its JSON answer when it gives one."""
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if "--json" in args else None

    def push(self, name: str, marker: str) -> int:
        folder = mf.make_onnx_package(self.root / "packages" / marker)
        (folder / "notes.txt").write_text(marker)  # new content: a new version
        pushed = self.cli("models", "push", str(folder), "--name", name, "--json")
        return int(pushed["number"])

    def replica(self) -> ServerProcess:
        return ServerProcess(self.root / "replica", env=self.env)


def answer(server: ServerProcess) -> tuple[int, str]:
    reply = httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW, timeout=10)
    return reply.status_code, reply.headers.get("pitstop-model-version", "")


def index(server: ServerProcess) -> dict[str, dict[str, str]]:
    rows = httpx.post(f"{server.url}/v2/repository/index", json={}, timeout=10).json()
    return {row["version"]: row for row in rows}


def cached(server: ServerProcess) -> set[str]:
    """The digests in the server's artifact cache."""
    folder = server.home / "cache" / "sha256"
    return {f"sha256:{entry.name}" for entry in folder.iterdir()} if folder.exists() else set()


def failed(server: ServerProcess, version: int) -> str:
    """Why ``version`` failed to load on ``server``; "" while it has not (yet)."""
    row = index(server).get(str(version), {})
    return row.get("reason", "") if row.get("state") == "UNAVAILABLE" else ""


def test_a_replica_serves_what_another_host_pushed_and_survives_a_cut_store(
    tmp_path: Path, s3: S3Server, proxy: Proxy
) -> None:
    site = Site(tmp_path, s3, proxy)
    v1 = site.push("iris", "one")
    site.cli("alias", "set", "iris", "production", str(v1))
    with site.replica() as replica:
        assert answer(replica) == (200, str(v1))
        assert len(cached(replica)) == 1  # downloaded into the replica's own cache, verified
        v2 = site.push("iris", "two")
        proxy.cut()
        site.cli("alias", "set", "iris", "production", str(v2))
        assert wait_for(lambda: failed(replica, v2), timeout=30), index(replica)
        assert f"s3://models/{site.prefix} unreachable" in failed(replica, v2)
        assert "(after 2 attempts)" in failed(replica, v2)
        assert {answer(replica) for _ in range(20)} == {(200, str(v1))}  # the old one serves
        proxy.restore()
        site.cli("alias", "set", "iris", "production", str(v1))  # any change retries FAILED
        site.cli("alias", "set", "iris", "production", str(v2))
        assert wait_for(lambda: answer(replica) == (200, str(v2)), timeout=30), index(replica)
        # The cache is bounded (1 byte here): once v1 is unloaded only v2's copy is left.
        v2_digest = next(v["digest"] for v in site.cli("versions", "iris", "--json")
                         if int(v["number"]) == v2)  # fmt: skip
        assert wait_for(lambda: cached(replica) == {v2_digest}, timeout=30), cached(replica)


def test_a_tampered_object_fails_the_version_naming_the_file(
    tmp_path: Path, s3: S3Server, proxy: Proxy
) -> None:
    site = Site(tmp_path, s3, proxy)
    v1 = site.push("iris", "one")
    site.cli("alias", "set", "iris", "production", str(v1))
    with site.replica() as replica:
        assert answer(replica) == (200, str(v1))
        v2 = site.push("iris", "two")
        versions = site.cli("versions", "iris", "--json")
        record = next(v for v in versions if int(v["number"]) == v2)
        key = f"{site.prefix}/sha256/{record['digest'].removeprefix('sha256:')}/files/model.onnx"
        weights = s3.client().get_object(Bucket="models", Key=key)["Body"].read()
        tampered = bytearray(weights)
        tampered[len(tampered) // 2] ^= 0xFF
        s3.client().put_object(Bucket="models", Key=key, Body=bytes(tampered))
        site.cli("alias", "set", "iris", "production", str(v2))
        assert wait_for(lambda: failed(replica, v2), timeout=30), index(replica)
        reason = failed(replica, v2)
        assert "'model.onnx'" in reason, reason
        assert "changed in the store" in reason, reason
        assert {answer(replica) for _ in range(10)} == {(200, str(v1))}


def test_a_push_with_the_store_cut_off_fails_in_one_line_and_registers_nothing(
    tmp_path: Path, s3: S3Server, proxy: Proxy
) -> None:
    site = Site(tmp_path, s3, proxy)
    v1 = site.push("iris", "one")
    folder = mf.make_onnx_package(tmp_path / "packages" / "two")
    (folder / "notes.txt").write_text("two")
    proxy.cut()
    failed = site.run("models", "push", str(folder), "--name", "iris")
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"error: artifact store s3://models/{site.prefix} unreachable")
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    proxy.restore()
    assert [int(v["number"]) for v in site.cli("versions", "iris", "--json")] == [v1]
    assert site.push("iris", "two") == v1 + 1  # pushing again once it is back completes it
