"""What each alias serves per replica: the pure join behind ``pitstop status`` and the console."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pitstop.registry import AuditEvent, ModelRecord, ServingState
from pitstop.registry.status import status_rows

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def model(aliases: dict[str, int]) -> ModelRecord:
    return ModelRecord("fraud", T0, max(aliases.values(), default=None), aliases, 3)


def state(replica: str, version: int, name: str, error: str | None = None) -> ServingState:
    return ServingState(replica, "fraud", version, f"sha256:{version}", name, T0, error, T0)


def moved(event_id: int, before: int | None, after: int, alias: str = "production") -> AuditEvent:
    return AuditEvent(
        event_id, T0, "t", "alias.set", "fraud", alias, after,
        None if before is None else {"version": before}, {"version": after}, None,
    )  # fmt: skip


HISTORY = [moved(3, 2, 3), moved(2, 1, 2), moved(1, None, 1)]  # newest first


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        # nobody reported: one row, NOT LOADED
        ([], [(None, None, "NOT LOADED", None)]),
        # the target is ready
        ([state("a", 3, "READY")], [("a", 3, "READY", None)]),
        # the target loads: the newest earlier target that is READY still serves
        ([state("a", 3, "LOADING"), state("a", 1, "READY")], [("a", 1, "LOADING", None)]),
        # the target failed, with its reason; v2 keeps serving
        (
            [state("a", 3, "FAILED", "boom"), state("a", 2, "READY")],
            [("a", 2, "FAILED", "boom")],
        ),
        # two replicas, each on its own
        (
            [state("a", 3, "READY"), state("b", 3, "LOADING"), state("b", 2, "READY")],
            [("a", 3, "READY", None), ("b", 2, "LOADING", None)],
        ),
        # nothing ready at all
        ([state("a", 3, "FAILED", "boom")], [("a", None, "FAILED", "boom")]),
    ],
)
def test_status_rows(states: list[ServingState], expected: list[tuple[Any, ...]]) -> None:
    rows = status_rows([model({"production": 3})], states, HISTORY)
    assert [(r.replica, r.serving, r.state, r.error) for r in rows] == expected
    assert all(r.target == 3 for r in rows)


def test_other_aliases_history_does_not_count() -> None:
    events = [moved(2, 1, 2, alias="staging"), moved(1, None, 1, alias="production")]
    rows = status_rows(
        [model({"production": 3, "staging": 2})],
        [state("a", 3, "LOADING"), state("a", 1, "READY")],
        events,
    )
    # production never pointed at v1 before; staging did, and v1 is READY
    assert [(r.alias, r.serving) for r in rows] == [("production", None), ("staging", 1)]
