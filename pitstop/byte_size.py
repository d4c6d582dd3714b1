"""Sizes people write: ``4GiB``, ``512MiB``, ``1.5G``, ``2000000`` (bytes). One parser for the
settings (``PITSTOP_MEMORY_BUDGET``) and manifests (``isolation.memory_limit``)."""

from __future__ import annotations

import re
from typing import Final

from pitstop.errors import InvalidInput

UNITS: Final = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_SIZE: Final = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")


def parse_byte_size(value: str | int, field: str) -> int:
    """Bytes in ``value``: an integer, or a number with a unit (k, M, G, T as powers of 1000;
    KiB, MiB, GiB, TiB as powers of 1024; case-insensitive). InvalidInput naming ``field`` for
    anything else, zero or negative."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.fullmatch(str(value))
        unit = UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise InvalidInput(
                f"{field}: {value!r} is not a size (a number of bytes, or with a unit: "
                "512MiB, 4GiB, 1.5G)"
            )
        size = int(float(match.group(1)) * unit)
    if size <= 0:
        raise InvalidInput(f"{field}: a size must be positive, got {value!r}")
    return size


def format_byte_size(size: int) -> str:
    """``size`` in the largest binary unit that keeps it at least 1 (``1.5 GiB``)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
