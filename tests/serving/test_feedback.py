"""Feedback items checked and joined (tables), recent predictions kept and found, and the desk
that stores feedback in a real (SQLite) registry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pitstop.errors import InvalidInput
from pitstop.monitoring.attempt import Attempt
from pitstop.protocol.prediction_id import issued_at, new_id
from pitstop.registry import PredictionRecord, Registry
from pitstop.serving.feedback import FeedbackDesk, FeedbackItem, joined, parse_items
from pitstop.serving.prediction_log import PredictionLog, predicted

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)

BAD = [
    ("not a list", {"feedback": {"id": "a"}}, "'feedback' must be a list"),
    ("empty", {"feedback": []}, "empty"),
    ("no outcome", {"id": "a"}, "exactly one of label, value, reward is required, got none"),
    ("two outcomes", {"id": "a", "label": 1, "value": 2}, "got label, value"),
    ("no id", {"label": 1}, "feedback.id"),
    ("empty id", {"id": "", "label": 1}, "feedback.id"),
    ("long id", {"id": "x" * 129, "label": 1}, "longer than 128"),
    ("list label", {"id": "a", "label": [1]}, "feedback.label"),
    ("text value", {"id": "a", "value": "3"}, "feedback.value: must be a finite number"),
    ("bool value", {"id": "a", "value": True}, "feedback.value"),
    ("infinite reward", {"id": "a", "reward": float("inf")}, "feedback.reward"),
    ("bad time", {"id": "a", "reward": 1, "at": "soon"}, "feedback.at"),
    ("bad row", {"id": "a", "reward": 1, "row": 1.5}, "feedback.row"),
    ("unknown field", {"id": "a", "reward": 1, "score": 1}, "feedback.score: unknown field"),
    ("second item", {"feedback": [{"id": "a", "reward": 1}, {"id": "b"}]}, "feedback[1]"),
    ("extra key", {"feedback": [], "model": "m"}, "unknown field 'model'"),
]


@pytest.mark.parametrize(("what", "body", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_body_names_its_field(what: str, body: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_items(body)


def test_good_bodies() -> None:
    one = parse_items({"id": "a", "label": "fraud", "at": "2026-12-05T10:00:00Z"})
    assert one == [FeedbackItem("a", "label", "fraud", datetime(2026, 12, 5, 10, tzinfo=UTC))]
    many = parse_items([{"id": "a", "reward": True}, {"id": "b", "value": 2, "row": 3, "at": 0}])
    assert many[0].outcome == 1.0
    assert (many[1].row, many[1].at) == (3, datetime(1970, 1, 1, tzinfo=UTC))
    assert parse_items({"feedback": [{"id": "c", "label": 2}]})[0].outcome == 2.0


def _i(kind: str, outcome: str | float, row: int = 0) -> FeedbackItem:
    return FeedbackItem("p1", kind, outcome, row=row)


def _p(*values: float | str) -> PredictionRecord:
    return PredictionRecord("m", "p1", 3, "canary", NOW, values)


JOINS = [
    ("right class", _i("label", 1.0), _p(1.0), {"correct": 1}),
    ("wrong class", _i("label", 2.0), _p(1.0), {"correct": 0}),
    ("class as text", _i("label", "1"), _p(1.0), {"correct": 1}),
    ("float32 label", _i("label", 1.2339999675750732), _p(1.234), {"correct": 1}),
    ("text labels", _i("label", "cat"), _p("cat", "dog"), {"correct": 1, "label": "cat"}),
    ("second row", _i("label", "dog", row=1), _p("cat", "dog"), {"correct": 1}),
    ("number vs text", _i("label", 1.0), _p("1"), {"correct": 1, "label": "1"}),
    ("value", _i("value", 3.0), _p(1.5), {"abs_error": 1.5, "sq_error": 2.25}),
    ("reward", _i("reward", 0.5), _p("cat"), {"reward": 0.5, "correct": None}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "item", "prediction", "expected"), JOINS, ids=[j[0] for j in JOINS]
)
def test_joined(
    what: str, item: FeedbackItem, prediction: PredictionRecord, expected: dict[str, Any]
) -> None:
    row = joined("m", item, prediction, NOW, "feedback[0]")
    assert (row.version, row.arm, row.predicted_at, row.observed_at) == (3, "canary", NOW, NOW)
    for key, value in expected.items():
        assert getattr(row, key) == value, key


@pytest.mark.parametrize(
    ("item", "prediction", "message"),
    [
        (_i("label", "cat"), _p(1.0), r"feedback\[0\].label: 'cat' is not a number"),
        (_i("value", 1.0), _p("cat"), r"feedback\[0\].value: .* the label 'cat'"),
        (_i("label", 1.0, row=2), _p(1.0), r"feedback\[0\].row"),
    ],
)  # fmt: skip
def test_joining_what_cannot_compare_is_refused(
    item: FeedbackItem, prediction: PredictionRecord, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        joined("m", item, prediction, NOW, "feedback[0]")


def test_predicted_values() -> None:
    assert predicted({"y": np.array([0.5, 1.5], dtype=np.float32)}) == (0.5, 1.5)
    assert predicted({"p": np.array([[0.1, 0.9], [0.8, 0.2]])}) == (1.0, 0.0)
    assert predicted({"label": np.array([b"cat", b"dog"], dtype=object)}) == ("cat", "dog")
    assert len(predicted({"y": np.zeros(100)})) == 16
    assert predicted({}) == ()


def _attempt(prediction_id: str | None, **changes: Any) -> Attempt:
    values: dict[str, Any] = {
        "model": "m", "registered": True, "version": 2, "digest": "", "transport": "rest",
        "request": None, "metadata": None, "started_ns": 0, "elapsed_ns": 0, "request_ns": 0,
        "outputs": {"y": np.array([1.0])}, "prediction_id": prediction_id, "arm": "2",
    }  # fmt: skip
    return Attempt(**{**values, **changes})


def test_the_log_keeps_recent_predictions_within_its_capacity_and_age() -> None:
    now = [1_000_000.0]
    log = PredictionLog(capacity=3, ttl_s=60, clock=lambda: now[0])
    for index in range(5):
        log.observe_attempt(_attempt(f"p{index}"))
    log.observe_attempt(_attempt("failed", error=InvalidInput("no")))
    log.observe_attempt(_attempt(None))  # a shadow copy: no id
    log.observe_attempt(_attempt("fallen", final=False))
    found, expired = asyncio.run(log.find("m", ["p0", "p3", "p4", "failed", "fallen"]))
    assert sorted(found) == ["p3", "p4"]
    assert found["p4"].arm == "2"
    assert found["p4"].predicted == (1.0,)
    assert expired == set()  # the caller's own ids carry no time: unknown, not expired
    old = new_id(now_ms=int((now[0] - 120) * 1000))
    assert issued_at(old) == pytest.approx(now[0] - 120, abs=0.01)
    assert asyncio.run(log.find("m", [old]))[1] == {old}
    now[0] += 61
    assert asyncio.run(log.find("m", ["p4"]))[0] == {}  # older than the retention


def test_the_desk_joins_stores_and_counts(tmp_path: Path) -> None:
    with Registry.open(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "a") as registry:
        log = PredictionLog(capacity=100, ttl_s=3600, store=registry.outcomes, flush_s=0.01)
        desk = FeedbackDesk(log, registry.outcomes)
        log.observe_attempt(_attempt("p1"))
        log.observe_attempt(_attempt("p2"))

        async def scenario() -> None:
            await log.flush()
            # A new log (another worker) finds them in the registry.
            other = FeedbackDesk(PredictionLog(100, 3600, registry.outcomes), registry.outcomes)
            receipt = await other.submit("m", parse_items([{"id": "p1", "value": 3}]))
            assert (receipt.accepted, receipt.replaced) == (1, 0)
            receipt = await desk.submit(
                "m", parse_items([{"id": "p1", "value": 2}, {"id": "p2", "reward": 1},
                                  {"id": "zz", "reward": 1}]),
            )  # fmt: skip
            assert (receipt.accepted, receipt.replaced, receipt.unknown) == (2, 1, 1)
            assert receipt.unknown_ids == ("zz",)

        asyncio.run(scenario())
        (sums,) = registry.outcomes.sums("m")
        assert (sums.version, sums.arm, sums.values, sums.abs_error, sums.rewards) == (
            2,
            "2",
            1,
            1.0,
            1,
        )
        assert desk.counts[("m", "accepted")] == 2
        assert desk.counts[("m", "unknown")] == 1
