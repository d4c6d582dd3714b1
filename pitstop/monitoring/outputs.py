"""What a version answers: class counts for classifiers, a histogram for scores.

One number per answered row of the first output: a label as it is, the argmax of a narrow
probability matrix, a score as it is (as :func:`pitstop.serving.window.predictions_of` reads
them). The kind is decided once per version from that output's datatype and width; embeddings
are covered by :mod:`pitstop.monitoring.behaviour` (norm and cosine to the reference centroid)
and are ignored here. O(rows) per response with no allocation once the classes are known; at
most :data:`MAX_CLASSES` labels per version, the rest counted as ``other``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import numpy as np

from pitstop.monitoring.histogram import SCORE_BUCKETS, Histogram

MAX_CLASSES: Final = 50
OTHER: Final = "other"
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
        if kind == IGNORED or array is None:
            return
        rows = array.reshape(array.shape[0], -1)
        if kind == CLASSES:
            values = rows[:, 0] if rows.shape[1] == 1 else rows.argmax(axis=1)
            classes = self.classes
            for value in values.tolist():
                label = str(int(value))
                if label not in classes and len(classes) >= MAX_CLASSES:
                    label = OTHER
                classes[label] = classes.get(label, 0) + 1
        else:
            for value in rows[:, 0].tolist():
                self.scores.observe(float(value))
