"""A version's reference profile: what its inputs looked like, per feature, for drift scores.

A profile is built from a table of reference rows (a file given at push time, or the first rows
a version served) and stored in the registry as JSON. Per feature it keeps quantile bin edges
with the reference counts in each bin (for PSI), a bounded sample (for KS), mean and quantiles.

A *feature* is one column of one input tensor. Table columns map onto tensors by name:
``amount`` is the whole 1-column tensor ``amount``; ``input[3]`` is column 3 of tensor ``input``;
and when a model has a single input tensor, any other column names map onto its columns in
order (``age, income, ...`` → ``input[0], input[1], ...``), keeping the file's names.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from pitstop.errors import InvalidInput
from pitstop.monitoring.drift import histogram, quantile_edges

FORMAT: Final = 1
BINS: Final = 10
SAMPLE: Final = 500
"""Reference values kept per feature for the KS statistic."""
MAX_FEATURES: Final = 64
"""Features per version that are profiled (and exported as labels); the rest are ignored."""
_INDEXED = re.compile(r"(.+)\[(\d+)\]")

Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    tensor: str
    column: int
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    sample: tuple[float, ...]
    mean: float
    quantiles: tuple[float, float, float]
    """5th, 50th and 95th percentiles."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "tensor": self.tensor, "column": self.column,
            "edges": list(self.edges), "counts": list(self.counts), "sample": list(self.sample),
            "mean": self.mean, "quantiles": list(self.quantiles),
        }  # fmt: skip

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> FeatureProfile:
        q = body["quantiles"]
        return cls(
            name=str(body["name"]), tensor=str(body["tensor"]), column=int(body["column"]),
            edges=tuple(float(e) for e in body["edges"]),
            counts=tuple(int(c) for c in body["counts"]),
            sample=tuple(float(v) for v in body["sample"]),
            mean=float(body["mean"]), quantiles=(float(q[0]), float(q[1]), float(q[2])),
        )  # fmt: skip


@dataclass(frozen=True)
class ReferenceProfile:
    source: str
    """``file:<name>`` or ``requests`` (the first rows served)."""
    rows: int
    features: tuple[FeatureProfile, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "source": self.source,
            "rows": self.rows,
            "features": [f.to_json() for f in self.features],
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ReferenceProfile:
        if body.get("format") != FORMAT:
            raise InvalidInput(f"reference profile format {body.get('format')!r} is not {FORMAT}")
        return cls(
            source=str(body["source"]),
            rows=int(body["rows"]),
            features=tuple(FeatureProfile.from_json(f) for f in body["features"]),
        )


def profile_feature(name: str, tensor: str, column: int, values: np.ndarray) -> FeatureProfile:
    values = values[np.isfinite(values)]
    edges = quantile_edges(values, BINS)
    sample = values
    if len(values) > SAMPLE:
        # Fixed seed: the same reference always gives the same profile.
        sample = np.random.default_rng(0).choice(values, SAMPLE, replace=False)
    quantiles = np.quantile(values, [0.05, 0.5, 0.95]) if len(values) else np.zeros(3)
    return FeatureProfile(
        name=name,
        tensor=tensor,
        column=column,
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in histogram(values, edges)),
        sample=tuple(float(v) for v in sample),
        mean=float(values.mean()) if len(values) else 0.0,
        quantiles=(float(quantiles[0]), float(quantiles[1]), float(quantiles[2])),
    )


def feature_name(tensor: str, column: int, width: int) -> str:
    return tensor if width == 1 else f"{tensor}[{column}]"


def profile_tensors(tensors: Mapping[str, np.ndarray], source: str) -> ReferenceProfile:
    """A profile of input tensors (``[rows]`` or ``[rows, k]``, numeric), e.g. rows served."""
    features: list[FeatureProfile] = []
    rows = 0
    for tensor, array in tensors.items():
        matrix = np.asarray(array, dtype=np.float64).reshape(len(array), -1)
        rows = max(rows, matrix.shape[0])
        for column in range(matrix.shape[1]):
            if len(features) == MAX_FEATURES:
                break
            name = feature_name(tensor, column, matrix.shape[1])
            features.append(profile_feature(name, tensor, column, matrix[:, column]))
    return ReferenceProfile(source, rows, tuple(features))


def profile_table(
    table: Columns, inputs: Sequence[tuple[str, int]], source: str
) -> ReferenceProfile:
    """A profile of a table's numeric columns, mapped onto the model's ``inputs``
    (``(tensor name, columns)``) as the module docstring says. InvalidInput names a column that
    maps nowhere."""
    widths = dict(inputs)
    positional = [name for name in table if name not in widths and not _INDEXED.fullmatch(name)]
    single = inputs[0][0] if len(inputs) == 1 else None
    if positional and (single is None or len(positional) > widths[single]):
        raise InvalidInput(
            f"reference columns {positional[:5]} match no input by name; name them after the "
            f"model's inputs {sorted(widths)} (or 'tensor[i]' for one column of a tensor)"
        )
    features: list[FeatureProfile] = []
    rows = 0
    for name, values in list(table.items())[:MAX_FEATURES]:
        indexed = _INDEXED.fullmatch(name)
        if name in widths:
            tensor, column = name, 0
        elif indexed is not None:
            tensor, column = indexed.group(1), int(indexed.group(2))
            if tensor not in widths or column >= widths[tensor]:
                raise InvalidInput(f"reference column {name!r}: the model has no such input")
        else:
            tensor, column = str(single), positional.index(name)
        rows = max(rows, len(values))
        features.append(profile_feature(name, tensor, column, values))
    return ReferenceProfile(source, rows, tuple(features))


def read_table(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns of a ``.csv`` (header row), ``.jsonl`` (one object per line; a list value
    becomes ``name[0]``, ``name[1]``, ...) or ``.parquet`` file (needs pyarrow). Columns that are
    not numbers are left out. InvalidInput says what is wrong."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as handle:
            records: list[dict[str, Any]] = list(csv.DictReader(handle))
    elif suffix in (".jsonl", ".ndjson"):
        records = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise InvalidInput(f"{path.name} line {number}: expected a JSON object")
            records.append(_flatten(row))
    elif suffix == ".parquet":
        return _read_parquet(path)
    else:
        raise InvalidInput(f"{path.name}: reference data must be .csv, .jsonl or .parquet")
    if not records:
        raise InvalidInput(f"{path.name} has no rows")
    columns: dict[str, np.ndarray] = {}
    for name in records[0]:
        try:
            columns[name] = np.array([float(r[name]) for r in records], dtype=np.float64)
        except (TypeError, ValueError, KeyError):
            continue  # not numeric in every row: not a feature we can profile
    if not columns:
        raise InvalidInput(f"{path.name} has no numeric columns")
    return columns


def _flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, list):
            for index, item in enumerate(value):
                flat[f"{key}[{index}]"] = item
        else:
            flat[key] = value
    return flat


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    try:
        import pyarrow.parquet as pq  # optional: only this file format needs it
    except ImportError:
        raise InvalidInput(
            f"{path.name}: reading parquet needs pyarrow, which is not installed "
            "(pip install pyarrow), or give the reference as .csv or .jsonl"
        ) from None
    table = pq.read_table(path)
    columns: dict[str, np.ndarray] = {}
    for name in table.column_names:
        array = table.column(name).to_numpy()
        if array.dtype.kind in "biuf":
            columns[name] = array.astype(np.float64)
    if not columns:
        raise InvalidInput(f"{path.name} has no numeric columns")
    return columns
