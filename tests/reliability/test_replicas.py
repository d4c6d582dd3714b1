"""Three replicas on one PostgreSQL registry and one S3-compatible store, a client spreading
requests over all three: production flips between two versions under load, no request fails,
and every replica serves each new target promptly (each flip loads it and drains the old one).

Replicas poll the registry once a minute here, so following the flips is the change notices'
work. The measured delays are in docs/benchmarks.md ("Replicas"); the bound asserted is looser
than the issue's 1 s p99 because CI machines are shared."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from bench.loadgen import LoadLoop, Outcome, failures, percentile
from pitstop.registry import Registry
from pitstop.registry.artifact_cache import ArtifactCache
from pitstop.registry.s3_store import S3ArtifactStore
from tests import model_factory as mf
from tests.reliability.conftest import url_through
from tests.s3_server import S3Server
from tests.server import ServerProcess, wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.postgres]

ROW = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}
REPLICAS = 3
FLIPS = 20


def test_alias_flips_under_load_across_three_replicas(
    tmp_path: Path, schema: tuple[str, int], s3: S3Server
) -> None:
    options, port = schema
    url = url_through(port, options)
    prefix = f"replicas-{uuid.uuid4().hex[:8]}"
    store = S3ArtifactStore("models", prefix, ArtifactCache(tmp_path / "ci", 1 << 30),
                            client=s3.client())  # fmt: skip
    with Registry.open(url, store=store) as registry:
        versions = [push(registry, tmp_path, marker) for marker in ("one", "two")]
        registry.set_alias("iris", "production", versions[0], actor="ci")
        env = {
            **s3.env(),
            "PITSTOP_REGISTRY_URL": url,
            "PITSTOP_ARTIFACTS_URL": f"s3://models/{prefix}",
            "PITSTOP_WATCH_INTERVAL_S": "60",  # notices or nothing
            "PITSTOP_WARMUP_RUNS": "1",
        }
        replicas = [ServerProcess(tmp_path / f"r{n}", env=env) for n in range(REPLICAS)]
        loads: list[LoadLoop] = []
        try:
            for replica in replicas:
                replica.start(wait_ready=False)
            for replica in replicas:
                assert wait_for(lambda r=replica: ready(r), timeout=60), replica.logs()[-2000:]
            loads = [
                LoadLoop(f"{r.url}/v2/models/iris/infer", ROW, workers=1, max_requests=100_000)
                for r in replicas
            ]
            for load in loads:
                load.start()
            flips: list[tuple[float, int]] = []
            for flip in range(FLIPS):
                target = versions[(flip + 1) % 2]
                registry.set_alias("iris", "production", target, actor="ci")
                flips.append((time.monotonic(), target))
                assert wait_for(lambda t=target: all(serves(load, t) for load in loads), 15), flip
            outcomes = [load.stop() for load in loads]
        finally:
            for load in loads:
                load.stop()
            for replica in replicas:
                replica.stop()
    sent = sum(len(o) for o in outcomes)
    assert sent > 500
    assert [failures(o)[:3] for o in outcomes] == [[]] * REPLICAS
    delays = [first_served(o, at, target) - at for o in outcomes for at, target in flips]
    assert percentile(delays, 99) < 3.0, sorted(delays)[-5:]


def push(registry: Registry, root: Path, marker: str) -> int:
    folder = mf.make_onnx_package(root / "packages" / marker)
    (folder / "notes.txt").write_text(marker)
    return registry.push(folder, name="iris", actor="ci").version.number


def ready(server: ServerProcess) -> bool:
    try:
        return httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def serves(load: LoadLoop, version: int) -> bool:
    latest = load.snapshot()[-1:]
    return bool(latest) and latest[0].version == str(version)


def first_served(outcomes: list[Outcome], since: float, version: int) -> float:
    """When the first request sent after ``since`` was answered by ``version``."""
    return next(o.ended for o in outcomes if o.started >= since and o.version == str(version))
