"""What a version answers: class counts for classifiers, a histogram for scores.

One number per answered row of the first output: a label as it is, the argmax of a narrow
probability matrix, a score as it is (as :func:`pitstop.serving.window.predictions_of` reads
them). The kind is decided once per version from that output's datatype and width; embeddings
are covered by :mod:`pitstop.monitoring.behaviour` (norm and cosine to the reference centroid)
and are ignored here. Vectorised (this runs on the event loop, and a response may hold a
million rows); at most :data:`MAX_CLASSES` labels per version, the rest counted as ``other``
(new labels enter in ascending order within one response).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from pitstop.monitoring.histogram import SCORE_BUCKETS, Histogram

MAX_CLASSES: Final = 50
OTHER: Final = "other"
FEW_ROWS: Final = 64
"""Responses up to this many rows are counted in a Python loop (cheaper than numpy's set-up
for the one-row answers most requests get); larger ones vectorised."""
NARROW: Final = 32
"""Float outputs at most this wide are class probabilities; wider ones are embeddings."""

CLASSES: Final = "classes"
SCORES: Final = "scores"
IGNORED: Final = "ignored"


def kind_of(outputs: Mapping[str, np.ndarray]) -> str:
    """How to summarise a version's answers, from one response."""
    for array in outputs.values():
        if array.ndim == 0:
            return IGNORED
        kind = array.dtype.kind
        width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
        if kind in "biu":
            return CLASSES if width == 1 else IGNORED
        if kind == "f":
            if width == 1:
                return SCORES
            return CLASSES if width <= NARROW else IGNORED
        return IGNORED  # strings (labels of any length): not worth their cost per request
    return IGNORED


class OutputBehaviour:
    """One version's answer distribution since this server started."""

    __slots__ = ("classes", "kind", "output", "scores")

    def __init__(self) -> None:
        self.kind: str | None = None
        self.output = ""
        """The output summarised: the first one of the first response."""
        self.classes: dict[str, int] = {}
        self.scores = Histogram(SCORE_BUCKETS)

    def observe(self, outputs: Mapping[str, np.ndarray]) -> None:
        kind = self.kind
        if kind is None:
            kind = self.kind = kind_of(outputs)
            self.output = next(iter(outputs), "")
        array = outputs.get(self.output)
        if kind == IGNORED or array is None or array.ndim == 0 or array.size == 0:
            return
        rows = array.reshape(array.shape[0], -1)
        if kind == CLASSES:
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
        classes = self.classes
        for value in values:
            label = str(int(value))
            if label not in classes and len(classes) >= MAX_CLASSES:
                label = OTHER
            classes[label] = classes.get(label, 0) + 1

    def _count(self, values: np.ndarray) -> None:
        """Add ``values`` (labels) to the class counts: vectorised, so a response of a million
        rows costs milliseconds, and Python work is bounded by :data:`MAX_CLASSES`."""
        labels, counts = np.unique(values, return_counts=True)
        classes = self.classes
        known = np.array([int(k) for k in classes if k != OTHER], dtype=np.int64)
        seen = np.isin(labels, known)
        for label, count in zip(labels[seen].tolist(), counts[seen].tolist(), strict=True):
            classes[str(label)] += count
        new_labels, new_counts = labels[~seen], counts[~seen]
        room = max(0, MAX_CLASSES - len(classes))
        for label, count in zip(
            new_labels[:room].tolist(), new_counts[:room].tolist(), strict=True
        ):
            classes[str(label)] = count
        rest = int(new_counts[room:].sum())
        if rest:
            classes[OTHER] = classes.get(OTHER, 0) + rest
