"""Raw tensor bytes: the layout shared by HTTP binary tensor data and gRPC raw contents.

Row-major, little-endian, no padding. BOOL is one byte per element (any non-zero byte is true).
Each BYTES element is a 4-byte little-endian length followed by that many bytes.

Decoding checks the declared shape against the bytes actually sent before it allocates
anything, so the memory a decode takes is bounded by the data, never by what a client declares:
at most the data's size for numeric types, and one Python ``bytes`` object per element (at least
4 bytes of data each) for BYTES.
"""

from __future__ import annotations

import struct

import numpy as np

from pitstop.errors import InvalidInput
from pitstop.protocol.datatype import datatype_of, numpy_dtype
from pitstop.protocol.shape import element_count

_LENGTH = struct.Struct("<I")


def decode_raw(
    datatype: str, shape: tuple[int, ...], raw: bytes | memoryview, where: str
) -> np.ndarray:
    """The array ``raw`` holds, shaped ``shape`` (checked by :mod:`pitstop.protocol.shape`);
    :class:`InvalidInput` naming ``where`` when the bytes cannot hold the datatype and shape."""
    dtype = numpy_dtype(datatype, f"{where}: datatype")
    count = element_count(shape)
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
        return _encode_bytes(array.reshape(-1))
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()


def _decode_bytes(raw: bytes | memoryview, count: int, where: str) -> np.ndarray:
    size = len(raw)
    if count * _LENGTH.size > size:
        # Refused before allocating: a shape of 2**31 with 4 bytes of data must cost nothing.
        raise InvalidInput(
            f"{where}: {size} bytes cannot hold {count} BYTES elements (each element is a "
            "4-byte little-endian length, then its bytes)"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > size:
            raise InvalidInput(
                f"{where}: BYTES data ends after {index} of {count} elements "
                "(each element is a 4-byte little-endian length, then its bytes)"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(
                f"{where}: BYTES element {index} declares {length} bytes but only "
                f"{size - offset} remain"
            )
        out[index] = bytes(raw[offset : offset + length])
        offset += length
    if offset != size:
        raise InvalidInput(f"{where}: {size - offset} bytes left over after {count} BYTES elements")
    return out


def _encode_bytes(flat: np.ndarray) -> bytes:
    """Length-prefixed elements, written into one growing buffer: no object per element beyond
    the array's own (an element that is not bytes travels as its text, like the JSON codec)."""
    out = bytearray()
    pack = _LENGTH.pack
    for item in flat:
        data = item if isinstance(item, bytes | bytearray) else str(item).encode("utf-8")
        out += pack(len(data))
        out += data
    return bytes(out)
