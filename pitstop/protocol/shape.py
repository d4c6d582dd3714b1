"""Tensor shapes as clients declare them, checked before anything is allocated from them.

A shape is at most :data:`MAX_RANK` non-negative dimensions whose product, with zero dimensions
counted as one, is at most :data:`MAX_ELEMENTS`. numpy refuses arrays whose byte size would
overflow int64 even when a dimension is zero, and arrays of more than 64 dimensions; both must be
a client's error, never the server's. Tensors that hold data are further bounded by the request
size: the codecs check the declared element count against the data actually sent before they
allocate.
"""

from __future__ import annotations

from typing import Final

from pitstop.errors import InvalidInput

MAX_RANK: Final = 32
"""Most dimensions a tensor may have (numpy 1.x's limit; real models stay far below it)."""

MAX_ELEMENTS: Final = 2**40
"""Largest product of a shape's dimensions (zeros counted as one): 16 TiB of FP64, far above
any request this server accepts and far below where numpy's size arithmetic overflows."""


def decode_shape(raw: object, where: str) -> tuple[int, ...]:
    """``raw`` (a JSON value or a protobuf repeated field as a list) as a checked shape;
    :class:`InvalidInput` naming ``where`` otherwise."""
    if not isinstance(raw, list):
        raise InvalidInput(f"{where} must be a list of non-negative integers")
    if len(raw) > MAX_RANK:
        raise InvalidInput(f"{where} has {len(raw)} dimensions; at most {MAX_RANK} are supported")
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in raw):
        raise InvalidInput(f"{where} must be a list of non-negative integers")
    extent = 1
    for dim in raw:
        extent *= dim or 1
        if extent > MAX_ELEMENTS:
            raise InvalidInput(
                f"{where} {raw} is too large: its dimensions multiply past {MAX_ELEMENTS}"
            )
    return tuple(raw)


def element_count(shape: tuple[int, ...]) -> int:
    """Elements a checked shape holds (0 when any dimension is 0)."""
    count = 1
    for dim in shape:
        count *= dim
    return count
