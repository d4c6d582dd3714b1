"""Raw tensor bytes: the layout shared by HTTP binary tensor data and gRPC raw contents.

Row-major, little-endian, no padding. BOOL is one byte per element (any non-zero byte is true).
Each BYTES element is a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from pitstop.errors import InvalidInput
from pitstop.protocol.datatype import datatype_of, numpy_dtype

_LENGTH = struct.Struct("<I")


def decode_raw(datatype: str, shape: tuple[int, ...], raw: bytes, where: str) -> np.ndarray:
    """The array ``raw`` holds, shaped ``shape``; :class:`InvalidInput` naming ``where`` when the
    byte count does not fit the datatype and shape."""
    dtype = numpy_dtype(datatype, f"{where}: datatype")
    count = math.prod(shape)
    if datatype == "BYTES":
        return _decode_bytes(raw, count, where).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{where}: {len(raw)} bytes of {datatype} data, but shape {list(shape)} needs "
            f"{expected}"
        )
    if datatype == "BOOL":
        flags: np.ndarray = np.frombuffer(raw, dtype=np.uint8) != 0
        return flags.reshape(shape)
    # Copy: frombuffer gives a read-only view of the request body, and runtimes may write.
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def encode_raw(array: np.ndarray) -> bytes:
    """The raw bytes of ``array`` (whose datatype is :func:`datatype_of` it)."""
    datatype = datatype_of(array)
    if datatype == "BYTES":
        return b"".join(_prefixed(item) for item in array.reshape(-1))
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()


def _decode_bytes(raw: bytes, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    offset = 0
    for index in range(count):
        if offset + 4 > len(raw):
            raise InvalidInput(
                f"{where}: BYTES data ends after {index} of {count} elements "
                "(each element is a 4-byte little-endian length, then its bytes)"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(
                f"{where}: BYTES element {index} declares {length} bytes but only "
                f"{len(raw) - offset} remain"
            )
        out[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise InvalidInput(
            f"{where}: {len(raw) - offset} bytes left over after {count} BYTES elements"
        )
    return out


def _prefixed(item: object) -> bytes:
    # Like the JSON codec: an element that is not bytes travels as its text.
    data = bytes(item) if isinstance(item, bytes | bytearray) else str(item).encode("utf-8")
    return _LENGTH.pack(len(data)) + data
