"""Replicas in the registry: heartbeats, who is live, who has applied the latest change, and
silent replicas forgotten (with their serving states)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pitstop.registry import Registry, acknowledgement
from pitstop.registry.replicas import FORGET_AFTER

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_live_replicas_and_what_they_have_applied(db_url: str, tmp_path: Path) -> None:
    now = [START]
    with Registry.open(db_url, tmp_path / "a", clock=lambda: now[0]) as registry:
        replicas = registry.replicas

        def beat(name: str, applied: int) -> None:
            replicas.heartbeat(
                name, host="h", pid=1, software="0.1", started_at=START,
                applied_generation=applied,
            )  # fmt: skip

        beat("r1", 7)
        beat("r2", 6)
        live = replicas.live(timeout_s=15)
        assert [(r.name, r.applied_generation) for r in live] == [("r1", 7), ("r2", 6)]
        assert str(acknowledgement(7, live)) == "applied on 1/2 replicas"
        now[0] += timedelta(seconds=10)
        beat("r2", 7)  # r2 caught up; r1 is 10 s silent, still live
        assert str(acknowledgement(7, replicas.live(timeout_s=15))) == "applied on 2/2 replicas"
        now[0] += timedelta(seconds=10)
        assert [r.name for r in replicas.live(timeout_s=15)] == ["r2"]  # r1 timed out
        replicas.leave("r2")
        assert replicas.live(timeout_s=15) == []


def test_replicas_silent_for_a_day_are_forgotten_with_their_states(
    db_url: str, tmp_path: Path
) -> None:
    now = [START]
    with Registry.open(db_url, tmp_path / "a", clock=lambda: now[0]) as registry:
        for name in ("gone", "here"):
            registry.replicas.heartbeat(
                name, host="h", pid=1, software="0.1", started_at=START, applied_generation=1
            )
            registry.record_serving_state(name, "m", 1, "sha256:x", "READY")
        now[0] += FORGET_AFTER + timedelta(seconds=1)
        registry.replicas.heartbeat(
            "here", host="h", pid=1, software="0.1", started_at=START, applied_generation=1
        )
        assert [r.name for r in registry.replicas.live(timeout_s=1e9)] == ["here"]
        assert [s.replica for s in registry.serving_states()] == ["here"]
