"""V2 datatype names and their numpy equivalents."""

from __future__ import annotations

from typing import Final

import numpy as np

from pitstop.errors import InvalidInput, Unsupported

NUMPY_DTYPES: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
"""Datatypes this server carries. BF16 has no numpy type and is refused as Unsupported."""

DATATYPES: Final[frozenset[str]] = frozenset([*NUMPY_DTYPES, "BF16"])
"""Every datatype name the protocol defines."""

_BY_KIND: Final[dict[str, str]] = {
    "b": "BOOL",
    "O": "BYTES",
    "S": "BYTES",
    "U": "BYTES",
}


def numpy_dtype(datatype: str, field: str = "datatype") -> np.dtype[np.generic]:
    """The numpy dtype for a V2 datatype; ``field`` names the request field in errors."""
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        if datatype == "BF16":
            raise Unsupported(f"{field}: BF16 is not supported by this server") from None
        raise InvalidInput(
            f"{field}: unknown datatype {datatype!r}; expected one of {sorted(DATATYPES)}"
        ) from None


_BY_DTYPE: Final[dict[np.dtype[np.generic], str]] = {
    dtype: name for name, dtype in NUMPY_DTYPES.items()
}


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype name for a numpy array (strings and objects are BYTES)."""
    name = _BY_DTYPE.get(array.dtype)
    if name is not None:
        return name
    kind_name = _BY_KIND.get(array.dtype.kind)  # fixed-width strings, other bool/object
    if kind_name is not None:
        return kind_name
    raise Unsupported(f"numpy dtype {array.dtype} has no V2 datatype")
