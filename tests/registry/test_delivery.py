"""Traffic policies, rollouts, rollback, leases and the serving timeline, on SQLite and PG."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitstop.errors import Conflict, InvalidInput, NotFound, VersionNotFound
from pitstop.registry import Arm, Guard, Registry, Shadow, TrafficPolicy, replay, served_at


@pytest.fixture
def fraud(registry: Registry, make_package) -> Registry:  # type: ignore[no-untyped-def]
    for number in (1, 2, 3):
        registry.push(make_package(f"v{number}"), name="fraud", actor="alice")
    registry.set_alias("fraud", "production", 1, actor="alice")
    registry.set_alias("fraud", "production", 2, actor="alice")
    return registry


def test_policy_set_is_audited_and_changes_the_generation(fraud: Registry) -> None:
    delivery = fraud.delivery
    assert delivery.policy("fraud") == TrafficPolicy()
    before = fraud.generation()
    policy = TrafficPolicy(arms=(Arm("production", 70.0), Arm("3", 30.0)), sticky_header="x-user")
    delivery.set_policy("fraud", policy, actor="bob", reason="a/b")
    assert delivery.policy("fraud") == policy
    assert fraud.generation() > before
    event = fraud.history("fraud", limit=1)[0]
    assert (event.action, event.actor, event.reason) == ("policy.set", "bob", "a/b")
    assert event.after == policy.to_json()
    snapshot = fraud.snapshot()
    assert snapshot.policies["fraud"] == policy
    assert set(snapshot.pinned["fraud"]) == {3}
    generation = fraud.generation()
    delivery.set_policy("fraud", policy, actor="bob")  # unchanged: nothing recorded
    assert fraud.generation() == generation


def test_policy_naming_a_missing_version_is_refused(fraud: Registry) -> None:
    with pytest.raises(VersionNotFound):
        fraud.delivery.set_policy("fraud", TrafficPolicy(shadows=(Shadow("9", 1.0),)), actor="bob")


def test_rollout_steps_then_promotes(fraud: Registry) -> None:
    delivery = fraud.delivery
    rollout = delivery.start_rollout(
        "fraud", 3, steps=[5, 50], interval_s=60, guard=Guard(), actor="carol"
    )
    assert (rollout.baseline, rollout.steps, rollout.weight) == (2, (5.0, 50.0, 100.0), 5.0)
    assert delivery.policy("fraud").weight_of("3") == 5
    with pytest.raises(Conflict, match="already active"):
        delivery.start_rollout("fraud", 3, steps=[5], interval_s=60, guard=Guard(), actor="carol")
    rollout = delivery.advance(rollout.id, "step", actor="ctl", reason="ok")
    assert delivery.policy("fraud").weight_of("3") == 50
    rollout = delivery.advance(rollout.id, "step", actor="ctl")
    assert rollout.weight == 100
    with pytest.raises(Conflict, match="last step"):
        delivery.advance(rollout.id, "step", actor="ctl")
    rollout = delivery.advance(rollout.id, "promote", actor="ctl", reason="guards held")
    assert rollout.state == "PROMOTED"
    assert fraud.aliases("fraud")["production"] == 3
    assert delivery.policy("fraud") == TrafficPolicy()
    assert delivery.active_rollout("fraud") is None


def test_rollback_of_a_rollout_gives_the_canary_nothing(fraud: Registry) -> None:
    delivery = fraud.delivery
    rollout = delivery.start_rollout("fraud", 3, steps=[25], interval_s=1, guard=Guard(), actor="c")
    rolled = delivery.advance(rollout.id, "rollback", actor="ctl", reason="error rate 100%")
    assert (rolled.state, rolled.reason) == ("ROLLED_BACK", "error rate 100%")
    assert delivery.policy("fraud").weight_of("3") == 0
    assert fraud.aliases("fraud")["production"] == 2
    with pytest.raises(Conflict):
        delivery.advance(rollout.id, "resume", actor="ctl")


def test_pause_resume_abort(fraud: Registry) -> None:
    delivery = fraud.delivery
    rollout = delivery.start_rollout("fraud", 3, steps=[10], interval_s=1, guard=Guard(), actor="c")
    assert delivery.advance(rollout.id, "pause", actor="c").state == "PAUSED"
    with pytest.raises(Conflict):
        delivery.advance(rollout.id, "step", actor="c")
    assert delivery.advance(rollout.id, "resume", actor="c").state == "RUNNING"
    assert delivery.advance(rollout.id, "abort", actor="c").state == "ABORTED"
    assert delivery.policy("fraud").weight_of("3") == 0


def test_rollout_validation(fraud: Registry) -> None:
    delivery = fraud.delivery
    with pytest.raises(InvalidInput, match="steps"):
        delivery.start_rollout("fraud", 3, steps=[50, 5], interval_s=1, guard=Guard(), actor="c")
    with pytest.raises(Conflict, match="already serves"):
        delivery.start_rollout("fraud", 2, steps=[5], interval_s=1, guard=Guard(), actor="c")
    with pytest.raises(VersionNotFound):
        delivery.start_rollout("fraud", 9, steps=[5], interval_s=1, guard=Guard(), actor="c")


def test_rollback_goes_to_the_previous_production_version(fraud: Registry) -> None:
    delivery = fraud.delivery
    delivery.start_rollout("fraud", 3, steps=[5], interval_s=1, guard=Guard(), actor="c")
    assert delivery.rollback("fraud", actor="oncall", reason="p99") == 1
    assert fraud.aliases("fraud")["production"] == 1
    assert delivery.active_rollout("fraud") is None
    assert delivery.policy("fraud").weight_of("3") == 0
    assert delivery.rollback("fraud", actor="oncall") == 2  # and back again


def test_rollback_without_history_is_not_found(registry: Registry, make_package) -> None:  # type: ignore[no-untyped-def]
    registry.push(make_package("only"), name="solo", aliases=["production"], actor="a")
    with pytest.raises(NotFound, match="earlier"):
        registry.delivery.rollback("solo", actor="a")


def test_lease_has_one_holder_until_it_expires(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = [datetime(2026, 11, 22, 12, 0, tzinfo=UTC)]
    with Registry.open(db_url, tmp_path / "a", clock=lambda: now[0]) as registry:
        delivery = registry.delivery
        assert delivery.acquire_lease("ctl", "r1", ttl_s=10)
        assert not delivery.acquire_lease("ctl", "r2", ttl_s=10)
        assert delivery.acquire_lease("ctl", "r1", ttl_s=10)  # renewal
        now[0] += timedelta(seconds=11)
        assert delivery.acquire_lease("ctl", "r2", ttl_s=10)
        assert not delivery.acquire_lease("ctl", "r1", ttl_s=10)
        delivery.release_lease("ctl", "r2")
        assert delivery.acquire_lease("ctl", "r1", ttl_s=10)


def test_timeline_answers_what_served_when(db_url: str, tmp_path, make_package) -> None:  # type: ignore[no-untyped-def]
    now = [datetime(2026, 11, 21, 9, 0, tzinfo=UTC)]

    def tick(minutes: int) -> None:
        now[0] += timedelta(minutes=minutes)

    with Registry.open(db_url, tmp_path / "a", clock=lambda: now[0]) as registry:
        for number in (1, 2):
            registry.push(make_package(f"t{number}"), name="m", actor="a")
        registry.set_alias("m", "production", 1, actor="a")  # 09:00
        tick(60)
        rollout = registry.delivery.start_rollout(  # 10:00 → v2 5%
            "m", 2, steps=[5, 50], interval_s=60, guard=Guard(), actor="a"
        )
        tick(60)
        registry.delivery.advance(rollout.id, "step", actor="ctl", reason="ok")  # 11:00 → 50%
        tick(60)
        registry.delivery.advance(rollout.id, "rollback", actor="ctl", reason="divergence")
        tick(180)  # 12:00 rolled back; 15:00 v2 made production by hand
        registry.set_alias("m", "production", 2, actor="a", reason="fixed")
        tick(60)
        registry.delivery.rollback("m", actor="oncall", reason="bad")  # 16:00 back to v1
        entries = replay(registry.history("m"))

    def at(hour: int, minute: int = 0) -> dict[int, float]:
        entry = served_at(entries, datetime(2026, 11, 21, hour, minute, tzinfo=UTC))
        return entry.shares if entry else {}

    assert at(8) == {}
    assert at(9, 30) == {1: 100.0}
    assert at(10, 30) == {1: 95.0, 2: 5.0}
    assert at(11, 30) == {1: 50.0, 2: 50.0}
    assert at(14) == {1: 100.0}
    assert at(15, 30) == {2: 100.0}
    assert at(17) == {1: 100.0}
    reasons = [e.event.reason for e in entries if e.event.action == "rollout.rollback"]
    assert reasons == ["divergence"]
