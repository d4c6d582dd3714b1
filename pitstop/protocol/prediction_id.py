"""Prediction ids: what names one answer, so that what happened next can be joined to it.

A response's id is its prediction id: the request's own ``id`` when it sent one, otherwise a
UUIDv7 (RFC 9562: 48 bits of Unix milliseconds, then random bits) the server generates. The
time inside a generated id lets feedback for an id that is no longer kept be reported as
*expired* rather than *unknown*; a caller's own ids carry no time and are only ever unknown.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Final

MAX_LENGTH: Final = 128
"""Longest prediction id kept (longer request ids are answered but not recorded)."""


def new_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7 as 36 characters."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def issued_at(prediction_id: str) -> float | None:
    """Unix seconds a generated id was made at; None for an id that is not a UUIDv7."""
    if len(prediction_id) != 36:
        return None
    try:
        parsed = uuid.UUID(prediction_id)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return (parsed.int >> 80) / 1000.0
