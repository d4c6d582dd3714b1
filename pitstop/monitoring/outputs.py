"""What kind of output a model answers, decided in one place, and what a version answers.

:func:`kind_of` names an output array's kind from its datatype and row width — a label, a
score, class probabilities, an embedding, or codes — and :func:`row_values` turns it into one
number per row (a label as it is, a score as it is, the argmax of probabilities, the L2 norm of
an embedding). Rollout windows, shadow comparisons and the answer distribution below all read
outputs through these two.

:class:`OutputBehaviour` counts labels for classifiers and keeps a histogram for scores, from the
first output of every answer; embeddings are covered by :mod:`pitstop.monitoring.behaviour` (norm
and cosine to the reference centroid) and are ignored here. Vectorised (this runs on the event
loop, and a response may hold a million rows); at most :data:`MAX_CLASSES` labels per version,
the rest counted as ``other`` (new labels enter in ascending order within one response).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from pitstop.monitoring.histogram import SCORE_BUCKETS, Histogram
from pitstop.monitoring.tally import Key, Tally

MAX_CLASSES: Final = 50
OTHER: Final = "other"
FEW_ROWS: Final = 64
"""Responses up to this many rows are counted in a Python loop (cheaper than numpy's set-up
for the one-row answers most requests get); larger ones vectorised."""
NARROW: Final = 32
"""Float outputs at most this wide are class probabilities; wider ones are embeddings."""


class OutputKind(enum.Enum):
    LABEL = "label"
    """One integer or string per row."""
    SCORE = "score"
    """One float per row (a regression value, a probability of the positive class)."""
    PROBABILITIES = "probabilities"
    """Float rows at most :data:`NARROW` wide: class probabilities or logits."""
    EMBEDDING = "embedding"
    """Float rows wider than :data:`NARROW`."""
    CODES = "codes"
    """Integer or string rows wider than one (token ids, multi-label codes)."""

    @property
    def discrete(self) -> bool:
        """Values compare for equality (labels, codes), not by distance."""
        return self in (OutputKind.LABEL, OutputKind.CODES)


def kind_of(array: np.ndarray) -> OutputKind:
    """The kind of one output array; a scalar counts as one row."""
    width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
    if array.dtype.kind in "fc":
        if width == 1:
            return OutputKind.SCORE
        return OutputKind.PROBABILITIES if width <= NARROW else OutputKind.EMBEDDING
    return OutputKind.LABEL if width == 1 else OutputKind.CODES


def row_values(array: np.ndarray, kind: OutputKind | None = None) -> np.ndarray:
    """One float per row of ``array`` (at least one-dimensional): a label or score as it is
    (strings hashed), the argmax of probabilities, the L2 norm of an embedding, the first
    column of codes."""
    kind = kind or kind_of(array)
    rows = array.reshape(array.shape[0], -1)
    values: np.ndarray
    if kind is OutputKind.PROBABILITIES:
        values = np.argmax(rows, axis=1).astype(np.float64)
        return values
    if kind is OutputKind.EMBEDDING:
        values = np.linalg.norm(rows.astype(np.float64), axis=1)
        return values
    first = rows[:, 0]
    if first.dtype.kind in "OSU":
        return np.array([float(hash(item) % 1_000_003) for item in first], dtype=np.float64)
    return first.astype(np.float64)


_SUMMARISED: Final = frozenset({OutputKind.LABEL, OutputKind.SCORE, OutputKind.PROBABILITIES})


class OutputBehaviour:
    """One version's answer distribution since this server started; counts in cells of
    ``tally`` under ``key`` (this process's memory unless given)."""

    __slots__ = ("_cells", "_key", "_tally", "kind", "output", "scores")

    def __init__(self, tally: Tally | None = None, key: Key = ()) -> None:
        self._tally = tally if tally is not None else Tally()
        self._key = key
        self.kind: OutputKind | None = None
        self.output = ""
        """The output summarised: the first one of the first response."""
        self._cells: dict[str, np.ndarray] = {}
        """Label → one cell: its count."""
        self.scores = Histogram(SCORE_BUCKETS, self._tally, (*key, "scores"))

    def class_cell(self, label: str) -> np.ndarray:
        cell = self._cells.get(label)
        if cell is None:
            cell = self._cells[label] = self._tally.cells((*self._key, "class", label))
        return cell

    def observe(self, outputs: Mapping[str, np.ndarray]) -> None:
        if self.kind is None:
            self.output = next(iter(outputs), "")
            first = outputs.get(self.output)
            self.kind = kind_of(first) if first is not None and first.ndim else OutputKind.CODES
        kind = self.kind
        array = outputs.get(self.output)
        if kind not in _SUMMARISED or array is None or array.ndim == 0 or array.size == 0:
            return
        if kind is OutputKind.LABEL and array.dtype.kind in "OSU":
            return  # strings (labels of any length): not worth their cost per request
        rows = array.reshape(array.shape[0], -1)
        if kind is not OutputKind.SCORE:
            values = rows[:, 0] if rows.shape[1] == 1 else rows.argmax(axis=1)
            if len(values) <= FEW_ROWS:
                self._count_few(values.tolist())
            else:
                self._count(values.astype(np.int64, copy=False))
        elif len(rows) <= FEW_ROWS:
            for value in rows[:, 0].tolist():
                self.scores.observe(float(value))
        else:
            self.scores.observe_many(rows[:, 0].astype(np.float64, copy=False))

    def _count_few(self, values: list[Any]) -> None:
        classes = self._cells
        for value in values:
            label = str(int(value))
            if label not in classes and len(classes) >= MAX_CLASSES:
                label = OTHER
            self.class_cell(label)[0] += 1

    def _count(self, values: np.ndarray) -> None:
        """Add ``values`` (labels) to the class counts: vectorised, so a response of a million
        rows costs milliseconds, and Python work is bounded by :data:`MAX_CLASSES`."""
        labels, counts = np.unique(values, return_counts=True)
        classes = self._cells
        known = np.array([int(k) for k in classes if k != OTHER], dtype=np.int64)
        seen = np.isin(labels, known)
        for label, count in zip(labels[seen].tolist(), counts[seen].tolist(), strict=True):
            classes[str(label)][0] += count
        new_labels, new_counts = labels[~seen], counts[~seen]
        room = max(0, MAX_CLASSES - len(classes))
        for label, count in zip(
            new_labels[:room].tolist(), new_counts[:room].tolist(), strict=True
        ):
            self.class_cell(str(label))[0] += count
        rest = int(new_counts[room:].sum())
        if rest:
            self.class_cell(OTHER)[0] += rest

    @property
    def classes(self) -> dict[str, int]:
        """Label → count."""
        return {label: int(cell[0]) for label, cell in self._cells.items()}
