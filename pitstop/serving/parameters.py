"""The inference request parameters the DataPlane acts on: ``timeout`` and ``priority``.

Pure functions over a request's ``parameters`` mapping; each refuses a bad value with
:class:`InvalidInput` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pitstop.errors import InvalidInput


def int_parameter(parameters: Mapping[str, Any], name: str) -> int | None:
    """``parameters[name]`` as a non-negative integer, or None when absent."""
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"parameters.{name} must be a non-negative integer, got {value!r}")
    return value


def deadline_of(
    parameters: Mapping[str, Any], default_timeout_s: float, now: float
) -> float | None:
    """When the request expires on the monotonic clock: ``timeout`` (µs) from ``now``, else the
    server default (0: none); None for no deadline."""
    timeout_us = int_parameter(parameters, "timeout")
    if timeout_us:
        return now + timeout_us / 1e6
    if default_timeout_s:
        return now + default_timeout_s
    return None


def priority_of(parameters: Mapping[str, Any]) -> int:
    """The batcher priority level: ``priority``, 0 (the highest) when absent."""
    return int_parameter(parameters, "priority") or 0


def without(parameters: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in parameters.items() if key != name}
