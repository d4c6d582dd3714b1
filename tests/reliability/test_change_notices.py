"""Registry changes reach replicas by PostgreSQL notices, not by polling: two replicas that poll
only once a minute follow every alias move at once; a registry on SQLite has no notices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitstop.registry import Registry, acknowledgement
from tests import model_factory as mf
from tests.reliability.conftest import url_through
from tests.server import ServerProcess, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}
FLIPS = 8


def push(registry: Registry, root: Path, marker: str) -> int:
    folder = mf.make_onnx_package(root / "packages" / marker)
    (folder / "notes.txt").write_text(marker)
    return registry.push(folder, name="iris", actor="ci").version.number


def test_a_postgres_registry_announces_each_change_and_sqlite_none(
    tmp_path: Path, schema: tuple[str, int]
) -> None:
    options, port = schema
    with Registry.open(url_through(port, options), tmp_path / "artifacts") as registry:
        version = push(registry, tmp_path, "one")
        heard = threading.Semaphore(0)
        stop = registry.listen(heard.release)
        assert stop is not None
        try:
            assert heard.acquire(timeout=10)  # once on connect: the caller catches up
            registry.set_alias("iris", "production", version, actor="ci")
            assert heard.acquire(timeout=5)
            registry.record_serving_state("r", "iris", version, "d", "READY")
            assert not heard.acquire(timeout=1)  # serving states are not catalog changes
        finally:
            stop()
    with Registry.open(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "a") as sqlite:
        assert sqlite.listen(lambda: None) is None


def test_replicas_follow_alias_moves_at_once_without_polling(
    tmp_path: Path, schema: tuple[str, int]
) -> None:
    options, port = schema
    url = url_through(port, options)
    artifacts = tmp_path / "artifacts"
    with Registry.open(url, artifacts) as registry:
        v1, v2 = push(registry, tmp_path, "one"), push(registry, tmp_path, "two")
        # Both stay loaded (staging holds the other), so a flip is a routing change.
        registry.set_alias("iris", "production", v1, actor="ci")
        registry.set_alias("iris", "staging", v2, actor="ci")
        env = {
            "PITSTOP_REGISTRY_URL": url,
            "PITSTOP_ARTIFACT_ROOT": str(artifacts),
            "PITSTOP_WATCH_INTERVAL_S": "60",  # notices or nothing
            "PITSTOP_HEARTBEAT_S": "1",
        }
        replicas = [ServerProcess(tmp_path / f"r{n}", env=env) for n in range(2)]
        try:
            for replica in replicas:
                replica.start()
            delays = []
            for flip in range(FLIPS):
                target, other = (v2, v1) if flip % 2 == 0 else (v1, v2)
                registry.set_alias("iris", "staging", other, actor="ci")
                registry.set_alias("iris", "production", target, actor="ci")
                moved = time.monotonic()
                for replica in replicas:
                    assert wait_for(lambda r=replica, t=target: serves(r) == t, timeout=10), flip
                delays.append(time.monotonic() - moved)
            # Both acknowledge the last move; a stopped replica leaves the list at once.
            generation = registry.generation()
            assert wait_for(lambda: applied(registry) == (generation, 2, 2), timeout=10)
            listed = replicas_cli(env, tmp_path)
            assert (listed["generation"], listed["applied"], listed["live"]) == (generation, 2, 2)
            assert sorted(r["name"] for r in listed["replicas"]) == sorted(
                f"{socket.gethostname()}:{r.port}" for r in replicas
            )
            # A token made on one machine is accepted by both; revoked, refused by both at once.
            token = cli(env, tmp_path, "token", "create", "ops", "--scope", "read").strip()
            assert wait_for(lambda: statuses(replicas, token) == {200}, timeout=5)
            cli(env, tmp_path, "token", "revoke", "ops")
            revoked = time.monotonic()
            assert wait_for(lambda: statuses(replicas, token) == {401}, timeout=5)
            assert time.monotonic() - revoked < 2.0
            replicas[1].stop()
            assert [r.name for r in registry.replicas.live(15)] == [listed_name(replicas[0])]
        finally:
            for replica in replicas:
                replica.stop()
    assert max(delays) < 2.0, delays  # polling alone would take up to a minute


def applied(registry: Registry) -> tuple[int, int, int]:
    ack = acknowledgement(registry.generation(), registry.replicas.live(15))
    return ack.generation, ack.applied, ack.live


def listed_name(server: ServerProcess) -> str:
    return f"{socket.gethostname()}:{server.port}"


def cli(env: dict[str, str], root: Path, *args: str) -> str:
    """``pitstop ARGS`` from another machine's home (same registry); its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "pitstop", *args],
        env={**os.environ, **env, "PITSTOP_HOME": str(root / "laptop"), "PITSTOP_ACTOR": "ci"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def replicas_cli(env: dict[str, str], root: Path) -> dict[str, Any]:
    listed: dict[str, Any] = json.loads(cli(env, root, "replicas", "--json"))
    return listed


def statuses(replicas: list[ServerProcess], token: str) -> set[int]:
    """What each replica answers a management read with ``token``."""
    headers = {"authorization": f"Bearer {token}"}
    return {
        httpx.get(f"{r.url}/v2/pitstop/models/iris/traffic", headers=headers, timeout=5).status_code
        for r in replicas
    }


def serves(server: ServerProcess) -> int:
    reply = httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW, timeout=5)
    return int(reply.headers.get("pitstop-model-version", "0")) if reply.status_code == 200 else 0
