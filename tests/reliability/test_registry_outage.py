"""A replica whose PostgreSQL registry goes away under load: every inference request is still
answered, the server stays ready and says the registry is unreachable (health, metrics),
management calls get 503 naming the cause, the CLI says so in one line, and an alias move made
after the database returns is served within seconds.

The server reaches PostgreSQL (127.0.0.1:5432, a schema of its own) through a TCP proxy the test
cuts and restores; the test itself talks to the database directly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.loadgen import LoadLoop, failures
from pitstop.registry import Registry
from tests import model_factory as mf
from tests.reliability.conftest import url_through
from tests.s3_server import Proxy
from tests.server import ServerProcess, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}
OUTAGE_S = float(os.environ.get("PITSTOP_TEST_OUTAGE_S", "6"))


def test_a_database_outage_costs_no_request_and_converges_after(
    tmp_path: Path, schema: tuple[str, int]
) -> None:
    options, pg_port = schema
    direct = url_through(pg_port, options)
    proxy = Proxy(pg_port)
    artifacts = tmp_path / "artifacts"
    try:
        with Registry.open(direct, artifacts) as registry:
            v1 = push(registry, tmp_path, "one")
            v2 = push(registry, tmp_path, "two")
            registry.set_alias("iris", "production", v1, actor="ci")
        env = {
            "PITSTOP_REGISTRY_URL": url_through(proxy.port, options),
            "PITSTOP_ARTIFACT_ROOT": str(artifacts),
            "PITSTOP_ROLLOUT_TICK_S": "0.5",
        }
        with ServerProcess(tmp_path / "replica", env=env) as server:
            url = f"{server.url}/v2/models/iris/infer"
            admin = {"authorization": f"Bearer {(server.home / 'admin.token').read_text().strip()}"}
            with LoadLoop(url, ROW, workers=2, max_requests=200_000) as load:
                time.sleep(0.5)
                proxy.cut()
                assert wait_for(lambda: not health(server)["registry"]["reachable"], timeout=10)
                ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
                assert ready.status_code == 200, ready.text  # readiness never needs the database
                assert "registry unreachable" in ready.json()["registry"]["error"]
                assert "pitstop_registry_up 0.0" in httpx.get(f"{server.url}/metrics").text
                traffic = httpx.get(
                    f"{server.url}/v2/pitstop/models/iris/traffic", headers=admin, timeout=15
                )
                assert traffic.status_code == 503, traffic.text
                assert "registry unreachable" in traffic.json()["error"]
                cli = subprocess.run(
                    [sys.executable, "-m", "pitstop", "alias", "set", "iris", "production", "2"],
                    env={**os.environ, **env, "PITSTOP_HOME": str(tmp_path / "laptop")},
                    capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert cli.returncode == 1
                assert cli.stderr.startswith("error: registry unreachable"), cli.stderr
                assert len(cli.stderr.strip().splitlines()) == 1, cli.stderr
                time.sleep(max(0.0, OUTAGE_S - 2))
                proxy.restore()
                assert wait_for(lambda: health(server)["registry"]["reachable"], timeout=10)
                with Registry.open(direct, artifacts) as registry:
                    moved = time.monotonic()
                    registry.set_alias("iris", "production", v2, actor="ci")
                served = wait_for(lambda: serves(load, v2, moved), timeout=10)
                converged = time.monotonic() - moved
                outcomes = load.stop()
        assert served, server.logs()[-3000:]
        assert converged < 5.0  # the issue asks for 2 s; the figure is in docs/benchmarks.md
        assert failures(outcomes) == [], failures(outcomes)[:3]
        assert len(outcomes) > 100
        logs = server.logs()
        assert logs.count("registry unreachable, serving what is loaded") == 1  # once, not per poll
        assert "registry reachable again" in logs
    finally:
        proxy.close()


def serves(load: LoadLoop, version: int, since: float) -> bool:
    return any(o.version == str(version) and o.started > since for o in load.snapshot())


def health(server: ServerProcess) -> dict[str, dict[str, object]]:
    answer: dict[str, dict[str, object]] = httpx.get(
        f"{server.url}/v2/health/live", timeout=5
    ).json()
    return answer


def push(registry: Registry, root: Path, marker: str) -> int:
    folder = mf.make_onnx_package(root / "packages" / marker)
    (folder / "notes.txt").write_text(marker)
    return registry.push(folder, name="iris", actor="ci").version.number
