"""Which input columns feed which model input, and turning a part's columns into tensors.

:func:`plan` decides, from the version's input signature and the file's column names alone (a
pure function, table-tested), where each input comes from:

- ``--column INPUT=COL``: that column (a list/array column is a tensor column: one array per
  row; a scalar column is one value per row);
- ``--column INPUT=A,B,C``: those scalar columns side by side, in that order (``(n, 3)``);
- otherwise a column named like the input;
- otherwise, for a model with one input whose rows are ``F`` wide, the ``F`` columns that are
  neither kept nor mapped, in file order (the usual CSV of features).

:func:`tensors` converts a part's columns (numpy arrays with a validity mask, from
:mod:`pitstop.batch.table`) to one array per input, and says which rows cannot be converted
and why (a null, a value of the wrong type, an array of the wrong length): those rows go to the
errors file, the others are scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from pitstop.errors import InvalidInput
from pitstop.protocol.datatype import numpy_dtype
from pitstop.protocol.tensor import TensorSpec


@dataclass(frozen=True)
class Source:
    """Where one model input comes from."""

    input: TensorSpec
    columns: tuple[str, ...]
    """One column (scalar or tensor column) or several scalar columns stacked."""


Column = tuple[np.ndarray, np.ndarray]
"""(values, valid): one entry per row; ``values`` is an object array for list columns."""


def plan(
    inputs: Sequence[TensorSpec],
    names: Sequence[str],
    overrides: Mapping[str, Sequence[str]],
    kept: Sequence[str] = (),
) -> tuple[Source, ...]:
    """Where each of ``inputs`` comes from among the columns ``names``. Raises InvalidInput
    naming the input that has no source, or the override that names a missing column."""
    if not inputs:
        raise InvalidInput("the version declares no inputs and its runtime reports none")
    known = {spec.name for spec in inputs}
    for name in overrides:
        if name not in known:
            raise InvalidInput(f"--column {name}=...: the model has no input {name!r} "
                               f"(inputs: {', '.join(sorted(known))})")  # fmt: skip
    present = set(names)
    sources = []
    for spec in inputs:
        columns = tuple(overrides.get(spec.name, ()))
        if not columns and spec.name in present:
            columns = (spec.name,)
        if not columns and len(inputs) == 1:
            width = _width(spec)
            used = set(kept)
            rest = tuple(name for name in names if name not in used)
            if (width is not None and len(rest) == width) or (width == 1 and len(rest) == 1):
                columns = rest
        if not columns:
            raise InvalidInput(
                f"input {spec.name!r} {list(spec.shape)}: no column named so; map one with "
                f"--column {spec.name}=COLUMN[,COLUMN...] (columns: {', '.join(names)})"
            )
        missing = [column for column in columns if column not in present]
        if missing:
            raise InvalidInput(f"--column {spec.name}=...: no column {missing[0]!r} in the input")
        sources.append(Source(spec, columns))
    return tuple(sources)


def tensors(
    sources: Sequence[Source], columns: Mapping[str, Column], rows: int
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
    """``(inputs, ok, errors)``: one array per input holding the rows where ``ok`` is true,
    in order, and the reason for every other row (row offset within the part → message)."""
    errors: dict[int, str] = {}
    converted: dict[str, np.ndarray] = {}
    for source in sources:
        array, bad = _convert(source, columns, rows)
        for row, reason in bad.items():
            errors.setdefault(row, reason)
        converted[source.input.name] = array
    ok = np.ones(rows, dtype=bool)
    if errors:
        ok[list(errors)] = False
    return {name: array[ok] for name, array in converted.items()}, ok, errors


def _width(spec: TensorSpec) -> int | None:
    """Values per row of an input shaped (-1,), (-1, F) or (-1, 1, ..., F); None otherwise."""
    dims = spec.shape[1:]
    if any(d < 0 for d in dims):
        return None
    return int(np.prod(dims)) if dims else 1


def _convert(
    source: Source, columns: Mapping[str, Column], rows: int
) -> tuple[np.ndarray, dict[int, str]]:
    spec = source.input
    dtype = numpy_dtype(spec.datatype)
    row_shape = tuple(spec.shape[1:])
    bad: dict[int, str] = {}  # the first reason of each row, in column order
    if len(source.columns) == 1 and _is_tensor(row_shape):
        # A tensor column, decided by the input's shape, not by its first value: lists, or
        # JSON arrays as text (CSV, JSON Lines); anything else fails its row.
        name = source.columns[0]
        values, valid = columns[name]
        if values.dtype != object:
            raise InvalidInput(
                f"input {spec.name!r} wants rows shaped {list(row_shape)}: column {name!r} "
                "holds one value per row (map several columns, or a list column)"
            )
        _empty_rows(name, valid, bad)
        arrays = _parse_arrays(name, values, valid, bad)
        return _stack(name, arrays, row_shape, dtype, bad, rows), bad
    parts = []
    for name in source.columns:
        values, valid = columns[name]
        _empty_rows(name, valid, bad)
        parts.append(_as_dtype(name, values, valid, dtype, bad))
    array = parts[0].reshape(rows, 1) if len(parts) == 1 else np.stack(parts, axis=1)
    width = int(np.prod(row_shape, dtype=np.int64)) if row_shape else 1
    if array.shape[1] != width:
        raise InvalidInput(
            f"input {spec.name!r} wants rows shaped {list(row_shape)}, columns "
            f"{', '.join(source.columns)} give {array.shape[1]} values"
        )
    return array.reshape((rows, *row_shape)), bad


def _empty_rows(name: str, valid: np.ndarray, bad: dict[int, str]) -> None:
    for row in np.flatnonzero(~valid).tolist():
        bad.setdefault(row, f"column {name!r} is empty")


def _is_tensor(row_shape: tuple[int, ...]) -> bool:
    """Whether a row of this shape needs several values (or a variable number of them)."""
    return len(row_shape) > 1 or (len(row_shape) == 1 and row_shape[0] != 1)


def _as_dtype(
    name: str, values: np.ndarray, valid: np.ndarray, dtype: np.dtype[Any], bad: dict[int, str]
) -> np.ndarray:
    """``values`` as ``dtype``; rows that do not convert (or do not fit) are recorded in
    ``bad`` (and zeroed)."""
    if dtype.kind == "O":  # BYTES
        out = np.empty(len(values), dtype=object)
        for row, value in enumerate(values.tolist()):
            out[row] = value.encode() if isinstance(value, str) else (value or b"")
        return out
    filled = values
    if not valid.all():
        filled = values.copy()
        filled[~valid] = 0 if values.dtype != object else None
    vectorised = values.dtype != object and values.dtype.kind in "biuf"
    if vectorised and dtype.kind in "iu" and values.dtype.kind in "iu":
        info = np.iinfo(dtype)  # integers to integers: out-of-range rows fail, never wrap
        outside = valid & ((filled < info.min) | (filled > info.max))
        for row in np.flatnonzero(outside).tolist():
            bad.setdefault(row, f"column {name!r}: {values[row]} does not fit {dtype.name}")
        return np.where(outside, 0, filled).astype(dtype)
    if vectorised and not (dtype.kind in "iu" and values.dtype.kind == "f"):
        return filled.astype(dtype)  # numbers to numbers (floats to integers: row by row)
    if values.dtype == object and dtype.kind == "f" and valid.all():
        try:  # text of numbers (CSV, JSON Lines): at numpy's speed unless one is bad
            return values.astype(str).astype(dtype)
        except (ValueError, TypeError):
            pass
    out = np.zeros(len(values), dtype=dtype)
    for row, value in enumerate(values.tolist()):
        if not valid[row]:
            continue
        try:
            out[row] = _scalar(value, dtype)
        except (ValueError, TypeError, OverflowError):
            bad.setdefault(row, f"column {name!r}: {value!r} is not {dtype.name}")
    return out


def _scalar(value: Any, dtype: np.dtype[Any]) -> Any:
    if isinstance(value, bool) and dtype.kind != "b":
        raise TypeError("a boolean")
    if isinstance(value, str):
        text = value.strip()
        if dtype.kind == "b":
            if text.lower() in ("true", "1"):
                return True
            if text.lower() in ("false", "0"):
                return False
            raise ValueError(text)
        return dtype.type(float(text)) if dtype.kind == "f" else dtype.type(int(text))
    if dtype.kind in "iu" and isinstance(value, float) and not value.is_integer():
        raise ValueError("not an integer")
    return dtype.type(value)


def _parse_arrays(
    name: str, values: np.ndarray, valid: np.ndarray, bad: dict[int, str]
) -> np.ndarray:
    """A tensor column's rows as lists: lists as they are, JSON arrays in text parsed; a row
    that is neither fails."""
    out = np.empty(len(values), dtype=object)
    for row, value in enumerate(values.tolist()):
        parsed: Any = []
        if valid[row]:
            if isinstance(value, list | tuple | np.ndarray):
                parsed = value
            elif isinstance(value, str | bytes):
                try:
                    parsed = orjson.loads(value)
                except orjson.JSONDecodeError:
                    parsed = None
            else:
                parsed = None
            if not isinstance(parsed, list | tuple | np.ndarray):
                bad.setdefault(row, f"column {name!r}: {str(value)[:40]!r} is not an array")
                parsed = []
        out[row] = parsed
    return out


def _stack(
    name: str,
    values: np.ndarray,
    row_shape: tuple[int, ...],
    dtype: np.dtype[Any],
    bad: dict[int, str],
    rows: int,
) -> np.ndarray:
    """A tensor column's arrays as one ``(rows, *row_shape)`` array; rows of another size or
    with non-numbers are recorded in ``bad``."""
    fixed = all(d >= 0 for d in row_shape)
    shape: tuple[int, ...] | None = row_shape if fixed else None
    arrays: list[np.ndarray | None] = []
    for row, value in enumerate(values.tolist()):
        converted: np.ndarray | None = None
        if row not in bad:
            try:
                converted = np.asarray(value, dtype=dtype)
            except (ValueError, TypeError, OverflowError):
                bad[row] = f"column {name!r}: not an array of {dtype.name}"
        if converted is not None:
            if shape is None:
                shape = converted.shape  # variable dimensions: the first row's shape rules
            want = int(np.prod(shape, dtype=np.int64))
            if converted.size != want:
                bad[row] = f"column {name!r}: {converted.size} values, the model wants {want}"
                converted = None
        arrays.append(converted)
    out = np.zeros((rows, *(shape if shape is not None else (0,))), dtype=dtype)
    for row, array in enumerate(arrays):
        if array is not None and shape is not None:
            out[row] = array.reshape(shape)
    return out
