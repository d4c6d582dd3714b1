"""Row- and table-shaped request bodies (MLflow's scoring protocol, KServe V1 / TF Serving REST)
turned into tensors, and tensors back into their answers. Pure functions, table-tested.

A model is seen through its :class:`Signature`: the input specs and, for a model whose one input
is a 2-D ``[rows, columns]`` tensor, the names of those columns (the manifest's ``columns``).

Bodies:

- MLflow ``/invocations`` (:func:`mlflow_inputs`): exactly one of ``dataframe_split``
  (``{columns, data}``), ``dataframe_records`` (a list of ``{column: value}``), ``instances``
  (a list of rows, or of ``{name: value}``) or ``inputs`` (one array, or ``{name: array}``);
  CSV with a header row (:func:`csv_inputs`).
- KServe V1 (:func:`v1_inputs`): ``instances`` (row format) or ``inputs`` (columnar format).

Named values (table columns, record keys, ``inputs`` keys) go to the input of that name; for
the one 2-D input, to the column of that name (so columns may come in any order, and extra
columns are ignored, as MLflow's schema enforcement does); a model without column names takes
exactly its width of columns by position. Unnamed rows are the one input's rows. Every problem
is an :class:`~pitstop.errors.InvalidInput` naming the field.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from pitstop.errors import InvalidInput
from pitstop.protocol.datatype import numpy_dtype
from pitstop.protocol.tensor import TensorSpec

MLFLOW_KEYS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_CSV_FIELD: Final = 1 << 20
"""Longest CSV field accepted (csv's default limit is 128 KiB; the body limit still applies)."""


@dataclass(frozen=True)
class Signature:
    """What a row-shaped body must become: the model's inputs and its column names."""

    inputs: tuple[TensorSpec, ...]
    columns: tuple[str, ...] = ()

    @property
    def matrix(self) -> TensorSpec | None:
        """The one 2-D input that a table fills column by column, if the model has one."""
        if len(self.inputs) == 1 and len(self.inputs[0].shape) == 2:
            return self.inputs[0]
        return None


def mlflow_inputs(body: object, signature: Signature) -> dict[str, np.ndarray]:
    """The tensors of an MLflow ``/invocations`` JSON body."""
    if not isinstance(body, Mapping):
        raise InvalidInput(f"the body must be a JSON object with one of: {', '.join(MLFLOW_KEYS)}")
    present = [key for key in MLFLOW_KEYS if key in body]
    unknown = sorted(str(key) for key in body if key not in MLFLOW_KEYS)
    if unknown:
        raise InvalidInput(
            f"{unknown[0]}: not supported; the body has exactly one of: {', '.join(MLFLOW_KEYS)}"
            + (" (params are not passed to models)" if unknown[0] == "params" else "")
        )
    if len(present) != 1:
        raise InvalidInput(
            f"the body must have exactly one of: {', '.join(MLFLOW_KEYS)}; got "
            f"{', '.join(present) or 'none'}"
        )
    key = present[0]
    value = body[key]
    if key == "dataframe_split":
        return _split(value, signature)
    if key == "dataframe_records":
        return _named(key, _records(key, value), signature)
    if key == "instances":
        return _instances(key, value, signature)
    return _columnar(key, value, signature)


def v1_inputs(body: object, signature: Signature) -> tuple[dict[str, np.ndarray], bool]:
    """The tensors of a KServe V1 / TF Serving ``:predict`` body, and whether it was columnar
    (``inputs``; answered with ``outputs``) rather than rows (``instances``; ``predictions``)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("the body must be a JSON object with 'instances' or 'inputs'")
    present = [key for key in ("instances", "inputs") if key in body]
    if len(present) != 1:
        raise InvalidInput("the body must have exactly one of: instances, inputs")
    key = present[0]
    if key == "instances":
        return _instances(key, body[key], signature), False
    return _columnar(key, body[key], signature), True


def csv_inputs(content: bytes, signature: Signature) -> dict[str, np.ndarray]:
    """The tensors of a CSV body: a header row of column names, then one row per example."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"CSV: not UTF-8: {exc}") from exc
    csv.field_size_limit(MAX_CSV_FIELD)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InvalidInput(f"CSV: {exc}") from exc
    rows = [row for row in rows if row]
    if not rows:
        raise InvalidInput("CSV: empty; expected a header row of column names")
    header, data = rows[0], rows[1:]
    if not data:
        raise InvalidInput("CSV: a header row but no data rows")
    for number, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise InvalidInput(
                f"CSV: row {number} has {len(row)} fields, the header has {len(header)}"
            )
    columns: dict[str, list[Any]] = {name: [] for name in header}
    if len(columns) != len(header):
        raise InvalidInput("CSV: duplicate column name in the header row")
    for row in data:
        for name, cell in zip(header, row, strict=True):
            columns[name].append(None if cell == "" else cell)
    return _named("CSV", columns, signature)


def mlflow_predictions(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """MLflow's answer: ``{"predictions": list}`` for one output, ``{name: list}`` for several."""
    if len(outputs) == 1:
        return {"predictions": _plain(next(iter(outputs.values())))}
    return {"predictions": {name: _plain(array) for name, array in outputs.items()}}


def v1_predictions(outputs: Mapping[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    """KServe V1 / TF Serving's answer: row format ``{"predictions": [row, ...]}`` (a row is a
    value for one output, ``{name: value}`` for several); columnar ``{"outputs": ...}``."""
    if columnar:
        if len(outputs) == 1:
            return {"outputs": _plain(next(iter(outputs.values())))}
        return {"outputs": {name: _plain(array) for name, array in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": _plain(next(iter(outputs.values())))}
    plain = {name: _plain(array) for name, array in outputs.items()}
    rows = min((len(values) for values in plain.values()), default=0)
    return {"predictions": [{name: plain[name][i] for name in plain} for i in range(rows)]}


def _split(value: object, signature: Signature) -> dict[str, np.ndarray]:
    where = "dataframe_split"
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: expected an object with 'columns' and 'data'")
    data = value.get("data")
    if not isinstance(data, list) or not data:
        raise InvalidInput(f"{where}.data: required, a non-empty list of rows")
    names = value.get("columns")
    if names is None:
        return _rows(f"{where}.data", data, signature)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInput(f"{where}.columns: expected a list of column names")
    if len(set(names)) != len(names):
        raise InvalidInput(f"{where}.columns: duplicate column name")
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(names):
            raise InvalidInput(
                f"{where}.data[{index}]: expected a list of {len(names)} values (one per column)"
            )
        for name, cell in zip(names, row, strict=True):
            columns[name].append(cell)
    return _named(where, columns, signature)


def _records(where: str, value: object) -> dict[str, list[Any]]:
    """A list of ``{column: value}`` as columns. A key missing from a record is null there (NaN
    for a float input), as pandas builds a frame from records."""
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{where}: required, a non-empty list of records")
    names: dict[str, None] = {}
    for index, record in enumerate(value):
        if not isinstance(record, Mapping):
            raise InvalidInput(f"{where}[{index}]: expected an object of column: value")
        names.update(dict.fromkeys(str(name) for name in record))
    return {name: [record.get(name) for record in value] for name in names}


def _instances(where: str, value: object, signature: Signature) -> dict[str, np.ndarray]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{where}: required, a non-empty list")
    if isinstance(value[0], Mapping):
        return _named(where, _records(where, value), signature)
    return _rows(where, value, signature)


def _columnar(where: str, value: object, signature: Signature) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        columns: dict[str, Any] = {str(name): cells for name, cells in value.items()}
        for name, cells in columns.items():
            if not isinstance(cells, list):
                raise InvalidInput(f"{where}.{name}: expected a list (one entry per row)")
        return _named(where, columns, signature)
    if isinstance(value, list) and value:
        return _rows(where, value, signature)
    raise InvalidInput(f"{where}: expected a non-empty list, or an object of name: list")


def _rows(where: str, rows: list[Any], signature: Signature) -> dict[str, np.ndarray]:
    """Unnamed rows: the rows of the model's one input."""
    if len(signature.inputs) != 1:
        names = ", ".join(spec.name for spec in signature.inputs)
        raise InvalidInput(
            f"{where}: the model has {len(signature.inputs)} inputs ({names}); send objects "
            "keyed by input name"
        )
    spec = signature.inputs[0]
    return {spec.name: _tensor(where, rows, spec)}


def _named(where: str, columns: Mapping[str, list[Any]], signature: Signature) -> dict[str, Any]:
    """Named columns (equal lengths) to the model's inputs."""
    names = {spec.name for spec in signature.inputs}
    if set(columns) <= names and (signature.matrix is None or set(columns) == names):
        missing = sorted(names - set(columns))
        if missing:
            raise InvalidInput(f"{where}: missing input {missing[0]!r}")
        return {
            spec.name: _tensor(f"{where}.{spec.name}", columns[spec.name], spec)
            for spec in signature.inputs
        }
    matrix = signature.matrix
    if matrix is None:
        unknown = sorted(set(columns) - names)
        missing = sorted(names - set(columns))
        if missing:
            raise InvalidInput(f"{where}: missing input {missing[0]!r} (got {unknown[0]!r})")
        return {
            spec.name: _tensor(f"{where}.{spec.name}", columns[spec.name], spec)
            for spec in signature.inputs
        }
    if signature.columns:
        missing = [name for name in signature.columns if name not in columns]
        if missing:
            raise InvalidInput(
                f"{where}: missing column {missing[0]!r} (the model's columns: "
                f"{', '.join(signature.columns)})"
            )
        chosen = list(signature.columns)
    else:
        width = matrix.shape[1]
        if width != -1 and len(columns) != width:
            raise InvalidInput(
                f"{where}: {len(columns)} columns, but input {matrix.name!r} takes {width} "
                "(the model has no column names, so columns are taken by position)"
            )
        chosen = list(columns)
    rows = len(columns[chosen[0]])
    for name in chosen:
        if len(columns[name]) != rows:
            raise InvalidInput(f"{where}.{name}: {len(columns[name])} values, expected {rows}")
    table = [[columns[name][row] for name in chosen] for row in range(rows)]
    return {matrix.name: _tensor(where, table, matrix)}


def _tensor(where: str, values: Sequence[Any], spec: TensorSpec) -> np.ndarray:
    """``values`` as an array of ``spec``'s datatype (BYTES: an object array of bytes)."""
    if spec.datatype == "BYTES":
        try:
            array = np.array(values, dtype=object)
        except ValueError as exc:
            raise InvalidInput(f"{where}: rows of different lengths") from exc
        flat = array.reshape(-1)
        for index, item in enumerate(flat):
            if isinstance(item, str):
                flat[index] = item.encode("utf-8")
            elif not isinstance(item, bytes):
                raise InvalidInput(
                    f"{where}: input {spec.name!r} is BYTES; expected strings, got {item!r}"
                )
        return array
    dtype = numpy_dtype(spec.datatype)
    try:
        array = np.array(values, dtype=object)
        if any(isinstance(v, list | dict) for v in array.flat):
            raise ValueError("rows of different lengths, or a nested value")
        if dtype.kind in "iu" and any(
            isinstance(v, float) and not v.is_integer() for v in array.flat
        ):
            raise ValueError("a number with a fraction for an integer input")
        return array.astype(dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"{where}: cannot read the values as {spec.datatype} for input {spec.name!r}: {exc}"
        ) from exc


def _plain(array: np.ndarray) -> Any:
    """A JSON-ready list; BYTES as text (UTF-8, invalid bytes replaced)."""
    if array.dtype == object:
        decoded = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.flat]
        return np.array(decoded, dtype=object).reshape(array.shape).tolist()
    return array.tolist()
