"""Recent observations per version, for judging a rollout step: O(1) to record, bounded.

Each served or failed request adds one entry (wall-clock time, latency, ok); each answered row adds
one prediction number. A window is read from a time on (the step's start) as a
:class:`Summary`, which replicas publish and the rollout controller merges
(:mod:`pitstop.serving.evidence`). Entries are kept in fixed-size rings, so memory stays
bounded however long a step lasts; a step that outlives the ring is judged on its most recent
entries.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import numpy as np

from pitstop.errors import is_server_failure
from pitstop.monitoring.attempt import Attempt
from pitstop.monitoring.outputs import row_values

RING = 20_000


def predictions_of(outputs: Mapping[str, np.ndarray]) -> list[float]:
    """One number per row from the first output (see
    :func:`pitstop.monitoring.outputs.row_values`), for the last :data:`RING` rows at most (a
    window keeps no more)."""
    for array in outputs.values():
        if array.ndim == 0 or array.shape[0] == 0:
            return []
        return row_values(array[-RING:]).tolist()  # type: ignore[no-any-return]
    return []


EDGES_MS: Final = tuple(round(0.05 * 1.25**i, 6) for i in range(72))
"""Upper edges of the latency buckets: 0.05 ms to ~470 s, 25% apart (a merged p99 is within a
quarter of the exact one); the last bucket catches everything above."""

MAX_PREDICTIONS: Final = 2_000
"""Predictions each replica publishes per arm: enough for the divergence check's PSI."""


@dataclass(frozen=True)
class Summary:
    """One replica's observations of one arm since a moment."""

    requests: int
    errors: int
    latency_counts: tuple[int, ...]
    """Successful requests per bucket of :data:`EDGES_MS` (plus one above the last edge)."""
    predictions: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_counts": list(self.latency_counts),
            "predictions": list(self.predictions),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Summary:
        return cls(
            int(body["requests"]),
            int(body["errors"]),
            tuple(int(n) for n in body["latency_counts"]),
            tuple(float(v) for v in body["predictions"]),
        )


@dataclass
class ArmRecorder:
    clock: Callable[[], float] = time.time
    requests: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=RING))
    predictions: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RING))

    def record(self, latency_ms: float, ok: bool, predictions: list[float]) -> None:
        now = self.clock()
        self.requests.append((now, latency_ms, ok))
        for value in predictions:
            self.predictions.append((now, value))

    def summary(self, since: float) -> Summary:
        """What was recorded from ``since`` on (wall clock)."""
        counts = [0] * (len(EDGES_MS) + 1)
        requests = errors = 0
        for at, latency_ms, ok in list(self.requests):
            if at < since:
                continue
            requests += 1
            if ok:
                counts[bisect.bisect_left(EDGES_MS, latency_ms)] += 1
            else:
                errors += 1
        values = [value for at, value in list(self.predictions) if at >= since]
        return Summary(requests, errors, tuple(counts), tuple(values[-MAX_PREDICTIONS:]))


class Windows:
    """One :class:`ArmRecorder` per (model, version) this server served."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._arms: dict[tuple[str, int], ArmRecorder] = {}

    def arm(self, model: str, version: int) -> ArmRecorder:
        recorder = self._arms.get((model, version))
        if recorder is None:
            recorder = self._arms[(model, version)] = ArmRecorder(self._clock)
        return recorder

    def observe_attempt(self, attempt: Attempt) -> None:
        """Record policy-routed attempts on a version (plain traffic does not pay for this):
        successes with their predictions, and server failures (a bad request is not the
        version's fault)."""
        if not attempt.routed or attempt.version is None:
            return
        error = attempt.error
        if error is None:
            predictions = predictions_of(attempt.outputs)
        elif is_server_failure(error):
            predictions = []
        else:
            return
        arm = self.arm(attempt.model, attempt.version)
        arm.record(attempt.elapsed_ns / 1e6, error is None, predictions)

    def summary(self, model: str, version: int, since: datetime) -> Summary:
        """What this process observed of ``model`` ``version`` since ``since``."""
        return self.arm(model, version).summary(since.timestamp())
