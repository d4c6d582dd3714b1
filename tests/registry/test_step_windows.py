"""Step windows in the registry: the controller judges a step on every live replica's
published windows, never on part of them, and a dead replica stops counting once it times out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pitstop.registry import Guard, Registry, Rollout, RolloutState
from pitstop.serving.evidence import SharedEvidence, windows_of
from pitstop.serving.window import Windows

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def rollout(step: int = 0) -> Rollout:
    return Rollout(
        id=1, model="m", version=2, baseline=1, steps=(10.0, 100.0), interval_s=60.0,
        guard=Guard(), step=step, state=RolloutState.RUNNING, reason=None, started_at=START,
        step_started_at=START, updated_at=START, created_by="t",
    )  # fmt: skip


def test_a_step_is_judged_on_every_live_replica_and_never_on_part_of_them(
    db_url: str, tmp_path: Path
) -> None:
    now = [START]
    with Registry.open(db_url, tmp_path / "a", clock=lambda: now[0]) as registry:
        evidence = SharedEvidence(registry, replica_timeout_s=15, publish_s=1)
        assert "no live replica" in str(evidence.gather(rollout()))
        for name in ("r1", "r2"):
            registry.replicas.heartbeat(
                name, host="h", pid=1, software="t", started_at=START, applied_generation=0
            )
        windows = Windows(clock=lambda: START.timestamp())
        windows.arm("m", 2).record(5.0, False, [])  # r1 saw one canary error
        registry.step_windows.publish("r1", windows_of(windows, [rollout()]), [1])
        assert evidence.gather(rollout()) == "waiting for the step's windows of r2"
        errors = Windows(clock=lambda: START.timestamp())
        for _ in range(3):
            errors.arm("m", 2).record(5.0, False, [])
        registry.step_windows.publish("r2", windows_of(errors, [rollout()]), [1])
        canary, baseline = evidence.gather(rollout())  # type: ignore[misc]
        assert (canary.requests, canary.errors, baseline.requests) == (4, 4, 0)
        # r2 published for step 0; at step 1 its row no longer counts.
        assert "r1, r2" in str(evidence.gather(rollout(step=1)))
        # r2 dies: once its heartbeat is older than the timeout, r1 alone is the evidence.
        now[0] += timedelta(seconds=20)
        registry.replicas.heartbeat(
            "r1", host="h", pid=1, software="t", started_at=START, applied_generation=0
        )
        registry.step_windows.publish("r1", windows_of(windows, [rollout()]), [1])
        canary, _ = evidence.gather(rollout())  # type: ignore[misc]
        assert (canary.requests, canary.errors) == (1, 1)
        registry.step_windows.publish("r1", [], [])  # the rollout ended: its rows go
        assert registry.step_windows.of(1) == []
