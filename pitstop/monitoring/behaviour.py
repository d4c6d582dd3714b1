"""How a version's outputs behave: running statistics of served embeddings, per version.

For every response of a version whose runtime publishes a reference centroid (see
:attr:`pitstop.runtimes.base.RuntimeMetadata.centroids`), each embedding row contributes its L2
norm and its cosine similarity to that centroid. A drifting input population shows up as a
falling mean cosine (or a moving norm) long before anyone looks at individual answers.

State per (model, version, output) is a fixed handful of numbers (count, sums, sums of squares,
extremes): O(1) memory however long the server runs, O(rows * dim) work per response, no I/O and
no locks. It is updated on the event loop only; a periodic job (the monitoring issue) reads
:meth:`BehaviourRecorder.snapshot` and compares it with the reference profile.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitstop.monitoring.attempt import Attempt


@dataclass
class Running:
    """Count, mean, standard deviation and extremes of a stream of numbers, in O(1) state."""

    count: int = 0
    total: float = 0.0
    total_squares: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        values = values.astype(np.float64, copy=False)
        self.count += int(values.size)
        self.total += float(values.sum())
        self.total_squares += float(np.square(values).sum())
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0 if self.count else math.nan
        variance = (self.total_squares - self.total * self.total / self.count) / (self.count - 1)
        return math.sqrt(max(variance, 0.0))

    def to_json(self) -> dict[str, Any]:
        if not self.count:
            return {"count": 0}
        return {
            "count": self.count,
            "mean": self.mean,
            "std": self.std,
            "min": self.minimum,
            "max": self.maximum,
        }


@dataclass
class EmbeddingBehaviour:
    """Running norm and cosine-to-centroid of one version's embedding output."""

    centroid: np.ndarray
    """Unit-length reference centroid."""
    norm: Running = field(default_factory=Running)
    cosine: Running = field(default_factory=Running)

    @classmethod
    def for_centroid(cls, centroid: Sequence[float]) -> EmbeddingBehaviour:
        vector = np.asarray(centroid, dtype=np.float64)
        length = float(np.linalg.norm(vector))
        return cls(centroid=vector / length if length > 0 else vector)

    def observe(self, embeddings: np.ndarray) -> None:
        """Add every row of a ``[rows, dim]`` array; other shapes are ignored."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.centroid.shape[0]:
            return
        rows = embeddings.astype(np.float64, copy=False)
        norms = np.linalg.norm(rows, axis=1)
        self.norm.add(norms)
        self.cosine.add((rows @ self.centroid) / np.maximum(norms, 1e-12))

    def to_json(self) -> dict[str, Any]:
        return {"norm": self.norm.to_json(), "cosine_to_centroid": self.cosine.to_json()}


class BehaviourRecorder:
    """Every version's :class:`EmbeddingBehaviour` since this server started."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int, str], EmbeddingBehaviour] = {}

    def observe(
        self,
        model: str,
        version: int,
        centroids: Mapping[str, Sequence[float]],
        outputs: Mapping[str, np.ndarray],
    ) -> None:
        """Record the rows of each output that has a centroid. Cheap when ``centroids`` is empty
        (models without a reference profile)."""
        for name, centroid in centroids.items():
            array = outputs.get(name)
            if array is None:
                continue
            key = (model, version, name)
            behaviour = self._by_key.get(key)
            if behaviour is None:
                behaviour = self._by_key[key] = EmbeddingBehaviour.for_centroid(centroid)
            behaviour.observe(np.asarray(array))

    def observe_attempt(self, attempt: Attempt) -> None:
        if attempt.centroids and attempt.error is None and attempt.version is not None:
            self.observe(attempt.model, attempt.version, attempt.centroids, attempt.outputs)

    def snapshot(self, model: str, version: int) -> dict[str, dict[str, Any]]:
        """Output name → its statistics so far (``{}`` when nothing was recorded)."""
        return {
            name: behaviour.to_json()
            for (m, v, name), behaviour in self._by_key.items()
            if (m, v) == (model, version)
        }

    def forget(self, model: str, version: int) -> None:
        """Drop a version's statistics (e.g. once it is unloaded for good)."""
        for key in [key for key in self._by_key if key[:2] == (model, version)]:
            del self._by_key[key]
