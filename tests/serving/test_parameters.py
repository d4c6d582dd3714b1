"""Request parameters → deadline and priority: a table."""

from __future__ import annotations

from typing import Any

import pytest

from pitstop.errors import InvalidInput
from pitstop.serving.parameters import deadline_of, priority_of, without

NOW = 100.0


@pytest.mark.parametrize(
    ("parameters", "default_s", "expected"),
    [
        ({}, 0.0, None),
        ({}, 2.5, NOW + 2.5),
        ({"timeout": 1500}, 0.0, NOW + 0.0015),
        ({"timeout": 1500}, 9.0, NOW + 0.0015),  # the request's own timeout wins
        ({"timeout": 0}, 3.0, NOW + 3.0),  # 0 means "none given"
    ],
)
def test_deadline(parameters: dict[str, Any], default_s: float, expected: float | None) -> None:
    assert deadline_of(parameters, default_s, NOW) == expected


@pytest.mark.parametrize(
    ("parameters", "expected"), [({}, 0), ({"priority": 2}, 2), ({"priority": None}, 0)]
)
def test_priority(parameters: dict[str, Any], expected: int) -> None:
    assert priority_of(parameters) == expected


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_bad_values_name_the_parameter(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"parameters\.timeout must be a non-negative integer"):
        deadline_of({"timeout": value}, 0.0, NOW)
    with pytest.raises(InvalidInput, match=r"parameters\.priority must be a non-negative integer"):
        priority_of({"priority": value})


def test_without_drops_one_parameter() -> None:
    assert without({"timeout": 5, "priority": 1}, "timeout") == {"priority": 1}
