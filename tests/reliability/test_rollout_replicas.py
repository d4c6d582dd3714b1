"""A rollout judged on every replica's traffic: two replicas on one PostgreSQL registry, the
rollout controller on the first only, every request sent to the second. The broken canary's
errors reach replica 2 alone, and the controller on replica 1 rolls it back; a healthy canary
whose other replica is killed mid-step is held while that replica's windows are missing, never
promoted on part of the evidence."""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
import pytest

from bench.loadgen import LoadLoop
from pitstop.registry import Guard, Registry, RolloutState
from tests.handler_models import BROKEN, SCORE, body, push
from tests.reliability.conftest import url_through
from tests.server import ServerProcess, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.postgres]


def start(tmp_path: Path, url: str, artifacts: Path) -> list[ServerProcess]:
    common = {
        "PITSTOP_REGISTRY_URL": url,
        "PITSTOP_ARTIFACT_ROOT": str(artifacts),
        "PITSTOP_ROLLOUT_TICK_S": "0.2",
        "PITSTOP_ROLLOUT_PUBLISH_S": "0.3",
        "PITSTOP_HEARTBEAT_S": "0.5",
        "PITSTOP_REPLICA_TIMEOUT_S": "4",
    }
    judge = ServerProcess(tmp_path / "r1", env=common)
    worker = ServerProcess(tmp_path / "r2", env={**common, "PITSTOP_ROLLOUT_CONTROLLER": "false"})
    return [judge.start(), worker.start()]


def test_errors_seen_by_one_replica_roll_back_the_canary_judged_on_another(
    tmp_path: Path, schema: tuple[str, int]
) -> None:
    options, port = schema
    url, artifacts = url_through(port, options), tmp_path / "artifacts"
    with Registry.open(url, artifacts) as registry:
        push(registry, tmp_path / "v1", "pay", SCORE, "production")
        canary = push(registry, tmp_path / "v2", "pay", BROKEN)
        replicas = start(tmp_path, url, artifacts)
        try:
            infer = f"{replicas[1].url}/v2/models/pay/infer"  # replica 2 only
            assert wait_for(lambda: httpx.post(infer, json=body(random.Random(0))).is_success, 20)
            with LoadLoop(infer, body(random.Random(1)), workers=2, max_requests=50_000) as load:
                rollout = registry.delivery.start_rollout(
                    "pay", canary, steps=[30, 100], interval_s=30,
                    guard=Guard(min_requests=40, min_errors=5), actor="ci",
                )  # fmt: skip
                assert wait_for(lambda: state(registry, rollout.id) != RolloutState.RUNNING, 20)
                outcomes = load.stop()
            ended = next(r for r in registry.delivery.rollouts("pay") if r.id == rollout.id)
        finally:
            for replica in replicas:
                replica.stop()
    assert ended.state is RolloutState.ROLLED_BACK, ended
    assert ended.reason is not None
    assert "error rate" in ended.reason
    assert any(o.status != 200 for o in outcomes)  # the errors were real, and all on replica 2
    assert f"rollout {ended.id} of pay v{canary}" in replicas[0].logs()  # replica 1 judged


def test_a_replica_killed_mid_step_holds_the_step_until_it_times_out(
    tmp_path: Path, schema: tuple[str, int]
) -> None:
    options, port = schema
    url, artifacts = url_through(port, options), tmp_path / "artifacts"
    with Registry.open(url, artifacts) as registry:
        push(registry, tmp_path / "v1", "calm", SCORE, "production")
        same = "return {'y': (x.sum(axis=1) + 0).astype(np.float32)}"  # new bytes, same answers
        canary = push(registry, tmp_path / "v2", "calm", same)
        replicas = start(tmp_path, url, artifacts)
        try:
            infer = f"{replicas[0].url}/v2/models/calm/infer"
            assert wait_for(lambda: httpx.post(infer, json=body(random.Random(0))).is_success, 20)
            with LoadLoop(infer, body(random.Random(1)), workers=2, max_requests=50_000):
                rollout = registry.delivery.start_rollout(
                    "calm", canary, steps=[50, 100], interval_s=1,
                    guard=Guard(min_requests=20, min_predictions=10_000), actor="ci",
                )  # fmt: skip
                replicas[1].process.kill()  # type: ignore[union-attr]  # mid-step, no goodbye
                killed = time.monotonic()
                # Its last windows go stale at once; until its heartbeat times out (4 s) the
                # step is held, though the interval (1 s) has passed: missing data is no pass.
                time.sleep(2.5)
                assert state(registry, rollout.id) is RolloutState.RUNNING
                assert current_step(registry, rollout.id) == 0
                # Then the survivor's evidence is complete and the rollout goes on.
                assert wait_for(lambda: advanced(registry, rollout.id), 20)
                moved = time.monotonic() - killed
        finally:
            for replica in replicas:
                replica.stop()
    assert moved < 15


def state(registry: Registry, rollout_id: int) -> RolloutState:
    return next(r.state for r in registry.delivery.rollouts(None) if r.id == rollout_id)


def advanced(registry: Registry, rollout_id: int) -> bool:
    return (
        current_step(registry, rollout_id) > 0
        or state(registry, rollout_id) is not RolloutState.RUNNING
    )


def current_step(registry: Registry, rollout_id: int) -> int:
    return next(r.step for r in registry.delivery.rollouts(None) if r.id == rollout_id)
