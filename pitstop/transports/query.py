"""Query-string parameters as typed values: a clear 400 naming the parameter for anything else.
Shared by the read routes (``catalog.py``, ``feedback.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

from pitstop import errors


def number(query: Mapping[str, str], name: str, default: float) -> float:
    """A finite number, or ``default`` when absent."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise errors.InvalidInput(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise errors.InvalidInput(f"{name} must be a finite number, got {raw!r}")
    return value


def integer(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer in ``[low, high]``, or ``default`` when absent."""
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidInput(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise errors.InvalidInput(f"{name} must be between {low} and {high}, got {value}")
    return value


def moment(raw: str | None, name: str = "since") -> datetime | None:
    """An ISO 8601 time (UTC when it has no zone) or Unix seconds; None when absent."""
    if raw is None or raw == "":
        return None
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise errors.InvalidInput(
            f"{name}: an ISO 8601 time or Unix seconds, got {raw!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
