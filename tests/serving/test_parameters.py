"""Request parameters → deadline and priority: a table."""

from __future__ import annotations

from typing import Any

import pytest

from pitstop.errors import InvalidInput
from pitstop.serving.parameters import deadline_of, priority_of

NOW = 100.0


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, None),
        ({"timeout": 1500}, NOW + 0.0015),
        ({"timeout": 0}, None),  # 0 means "none given": the server default applies
        ({"timeout": None}, None),
    ],
)
def test_deadline(parameters: dict[str, Any], expected: float | None) -> None:
    assert deadline_of(parameters, NOW) == expected


@pytest.mark.parametrize(
    ("parameters", "expected"), [({}, 0), ({"priority": 2}, 2), ({"priority": None}, 0)]
)
def test_priority(parameters: dict[str, Any], expected: int) -> None:
    assert priority_of(parameters) == expected


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_bad_values_name_the_parameter(value: object) -> None:
    with pytest.raises(InvalidInput, match=r"parameters\.timeout must be a non-negative integer"):
        deadline_of({"timeout": value}, NOW)
    with pytest.raises(InvalidInput, match=r"parameters\.priority must be a non-negative integer"):
        priority_of({"priority": value})
