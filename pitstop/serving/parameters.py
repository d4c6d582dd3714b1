"""The inference request parameters pitstop acts on: ``timeout`` (read by the transports) and
``priority`` (read by the DataPlane).

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


def deadline_of(parameters: Mapping[str, Any], now: float) -> float | None:
    """When the request expires on the monotonic clock: ``timeout`` (µs) from ``now``; None when
    it gives none (0 or absent), and the DataPlane applies the server default."""
    timeout_us = int_parameter(parameters, "timeout")
    return now + timeout_us / 1e6 if timeout_us else None


def priority_of(parameters: Mapping[str, Any]) -> int:
    """The batcher priority level: ``priority``, 0 (the highest) when absent."""
    return int_parameter(parameters, "priority") or 0


def bool_parameter(parameters: Mapping[str, Any], name: str, default: bool = False) -> bool:
    """The bool request parameter ``name`` (``default`` when absent); InvalidInput naming it
    when it is not a bool."""
    value = parameters.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"parameters.{name} must be a bool, got {type(value).__name__}")
    return value
