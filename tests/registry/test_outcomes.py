"""Predictions and feedback in the registry, on SQLite and PostgreSQL: upserts, lookups,
pruning and the per (version, arm) sums the outcome metrics come from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pitstop.registry import FeedbackRecord, PredictionRecord, Registry

T0 = datetime(2026, 12, 5, 9, tzinfo=UTC)


def _feedback(
    pid: str, version: int, arm: str, at: datetime, **outcome: float | int
) -> FeedbackRecord:
    return FeedbackRecord("m", pid, version, arm, at, at, at, **outcome)  # type: ignore[arg-type]


def test_predictions_are_upserted_found_and_pruned(registry: Registry) -> None:
    store = registry.outcomes
    store.add_predictions([
        PredictionRecord("m", "a", 1, "production", T0, (1.0, 2.0)),
        PredictionRecord("m", "b", 1, "", T0, ("cat",)),
        PredictionRecord("other", "a", 5, "", T0, (9.0,)),
    ])  # fmt: skip
    store.add_predictions([PredictionRecord("m", "a", 2, "2", T0 + timedelta(hours=2), (3.0,))])
    found = store.find_predictions("m", ["a", "b", "c"] + [f"x{i}" for i in range(1200)])
    assert sorted(found) == ["a", "b"]
    assert (found["a"].version, found["a"].arm, found["a"].predicted) == (2, "2", (3.0,))
    assert found["b"].predicted == ("cat",)
    assert found["a"].at == T0 + timedelta(hours=2)
    assert store.prune_predictions(T0 + timedelta(hours=1)) == 2
    assert sorted(store.find_predictions("m", ["a", "b"])) == ["a"]


def test_feedback_sums_per_version_and_arm(registry: Registry) -> None:
    store = registry.outcomes
    rows = [
        _feedback("1", 1, "production", T0, correct=1),
        _feedback("2", 1, "production", T0, correct=0),
        _feedback("3", 2, "2", T0, correct=1),
        _feedback("4", 2, "2", T0, abs_error=2.0, sq_error=4.0),
        _feedback("5", 2, "2", T0 + timedelta(hours=1), reward=3.0),
        _feedback("6", 2, "2", T0 + timedelta(hours=1), reward=0.0),
    ]
    assert store.record_feedback(rows) == 0
    assert store.record_feedback([_feedback("2", 1, "production", T0, correct=1)]) == 1
    by = {(s.version, s.arm): s for s in store.sums("m")}
    assert (by[(1, "production")].labels, by[(1, "production")].correct) == (2, 2)
    second = by[(2, "2")]
    assert (second.labels, second.values, second.rewards) == (1, 1, 2)
    assert (second.abs_error, second.sq_error, second.sq_error_sq) == (2.0, 4.0, 16.0)
    assert (second.reward, second.reward_sq, second.conversions) == (3.0, 9.0, 1)
    later = store.sums("m", since=T0 + timedelta(minutes=30))
    assert [(s.version, s.rewards, s.labels) for s in later] == [(2, 2, 0)]
    assert [s.version for s in store.sums("m", versions=[1])] == [1]
    assert store.models() == ["m"]
