"""The reliability suite, short form. ``bench/reliability.py`` runs the same scenarios long."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.loadgen import LoadLoop
from bench.reliability import (
    FAILURE_KINDS,
    X,
    failing_load,
    handler,
    memory_cycles,
    push_handler,
    shutdown_under_load,
    swap_under_load,
)
from tests.server import ServerProcess, open_registry, wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "PITSTOP_LOAD_TIMEOUT_S": "1",
        "PITSTOP_LOAD_RETRIES": "1",
        "PITSTOP_LOAD_RETRY_BACKOFF_S": "0.1",
    }
    with ServerProcess(tmp_path_factory.mktemp("home"), env) as process:
        yield process


def test_swap_loop_under_load_fails_no_request(server: ServerProcess) -> None:
    figures = swap_under_load(
        server.home, server.url, flips=8, workers=4, steady_s=1.0, max_requests=100_000
    )
    print(f"p99 steady {figures.p99_steady_ms:.2f} ms, during swaps {figures.p99_swaps_ms:.2f} ms")
    assert figures.failed == 0
    assert figures.versions == {"1", "2"}
    assert figures.requests > 100
    assert figures.longest_switch_s < 2.0


@pytest.mark.parametrize("kind", FAILURE_KINDS)
def test_failing_load_keeps_the_old_version_serving(server: ServerProcess, kind: str) -> None:
    figures = failing_load(server.home, server.url, kind, workers=2)
    assert figures.state == "FAILED", figures
    assert figures.failed == 0
    assert figures.versions == {"1"}
    assert figures.requests > 10
    expected = {
        "corrupt": "handler.py",
        "raises": "boom",
        "warmup": "warm-up example 0",
        "hangs": "timed out",
    }[kind]
    assert expected in figures.error


def test_load_unload_cycles_do_not_leak(server: ServerProcess) -> None:
    figures = memory_cycles(server.home, server, cycles=40)
    print(f"RSS growth over {figures.cycles} cycles: {figures.growth_mb:.1f} MB")
    assert figures.growth_mb < 50


def test_shutdown_under_load_cuts_no_request(tmp_path: Path) -> None:
    figures = shutdown_under_load(tmp_path, workers=4, grace_s=1.0)
    print(figures)
    assert figures.exit_code == 0
    assert figures.ready_went_false_s < 0.5
    assert figures.outcomes.get("200", 0) > 20
    assert figures.cut == 0, figures.outcomes


def test_resource_preserving_swap_unloads_first(server: ServerProcess, tmp_path: Path) -> None:
    """A model too big to hold twice: the old version goes before the new one loads; the alias
    may answer 503 meanwhile (the documented cost), never anything else."""
    with open_registry(server.home) as registry:
        push_handler(
            registry, tmp_path / "a", "big", handler(2), "production", swap="resource-preserving"
        )
        url = f"{server.url}/v2/models/big/infer"
        assert wait_for(lambda: httpx.post(url, json=X).status_code == 200, timeout=20)
        v2 = push_handler(registry, tmp_path / "b", "big", handler(3), swap="resource-preserving")
        with LoadLoop(url, X, workers=2, max_requests=20_000) as load:
            registry.set_alias("big", "production", v2, actor="t")
            assert wait_for(lambda: any(o.version == "2" for o in load.snapshot()), timeout=20)
            outcomes = load.stop()
    assert {o.status for o in outcomes} <= {200, 503}
    logs = server.logs()
    assert logs.index("big v1 unloaded") < logs.index("loading big v2")
