"""References to shared memory in inference requests (the shared-memory extensions).

An input or requested output whose parameters name ``shared_memory_region`` carries no data:
its bytes (in the layout of :mod:`pitstop.protocol.raw_tensor`) are at
``shared_memory_offset`` (default 0) in that registered region, ``shared_memory_byte_size``
long. These are pure values; the regions themselves are
:class:`pitstop.transports.shared_memory.SharedMemory`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pitstop.errors import InvalidInput

REGION: Final = "shared_memory_region"
OFFSET: Final = "shared_memory_offset"
BYTE_SIZE: Final = "shared_memory_byte_size"
PARAMETERS: Final = (REGION, OFFSET, BYTE_SIZE)


@dataclass(frozen=True, slots=True)
class SharedRef:
    """``byte_size`` bytes at ``offset`` in the region registered as ``region``."""

    region: str
    offset: int
    byte_size: int

    def to_parameters(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {REGION: self.region, BYTE_SIZE: self.byte_size}
        if self.offset:
            parameters[OFFSET] = self.offset
        return parameters


@dataclass(frozen=True, slots=True)
class SharedInput:
    """An input whose data is in shared memory: what it declares, and where."""

    datatype: str
    shape: tuple[int, ...]
    ref: SharedRef


@dataclass(frozen=True, slots=True)
class SharedOutput:
    """An output the server wrote to shared memory: what the response says of it (``size``:
    the bytes written, at most the reference's ``byte_size``)."""

    datatype: str
    shape: tuple[int, ...]
    ref: SharedRef
    size: int

    def to_parameters(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {REGION: self.ref.region, BYTE_SIZE: self.size}
        if self.ref.offset:
            parameters[OFFSET] = self.ref.offset
        return parameters


def shared_ref(parameters: Mapping[str, Any] | None, where: str) -> SharedRef | None:
    """The reference ``parameters`` make, or None when they name no region. InvalidInput when
    the offset or size is given without a region, or is not a non-negative integer."""
    if not parameters:
        return None
    region = parameters.get(REGION)
    if region is None:
        stray = [name for name in (OFFSET, BYTE_SIZE) if name in parameters]
        if stray:
            raise InvalidInput(f"{where}: parameters.{stray[0]} needs parameters.{REGION}")
        return None
    if not isinstance(region, str) or not region:
        raise InvalidInput(f"{where}: parameters.{REGION} must be a non-empty string")
    offset = _natural(parameters.get(OFFSET, 0), f"{where}: parameters.{OFFSET}")
    if BYTE_SIZE not in parameters:
        raise InvalidInput(f"{where}: parameters.{BYTE_SIZE} is missing")
    size = _natural(parameters[BYTE_SIZE], f"{where}: parameters.{BYTE_SIZE}")
    return SharedRef(region, offset, size)


def _natural(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{where} must be a non-negative integer, got {value!r}")
    return value
