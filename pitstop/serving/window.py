"""Recent observations per version, for judging a rollout step: O(1) to record, bounded.

Each served or failed request adds one entry (wall-clock time, latency, ok); each answered row adds
one prediction number. A window is read from a time on (the step's start). Entries are kept in
fixed-size rings, so memory stays bounded however long a step lasts; a step that outlives the ring
is judged on its most recent entries.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from pitstop.errors import is_server_failure
from pitstop.monitoring.attempt import Attempt
from pitstop.monitoring.outputs import row_values
from pitstop.serving.rollout import ArmWindow

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

    def window(self, since: float) -> ArmWindow:
        entries = [(latency, ok) for at, latency, ok in self.requests if at >= since]
        latencies = [latency for latency, ok in entries if ok]
        values = [value for at, value in self.predictions if at >= since]
        p99 = float(np.quantile(latencies, 0.99)) if latencies else 0.0
        return ArmWindow(
            requests=len(entries),
            errors=sum(1 for _, ok in entries if not ok),
            p99_ms=p99 if math.isfinite(p99) else 0.0,
            predictions=values,
        )


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

    def window(self, model: str, version: int, since: float) -> ArmWindow:
        return self.arm(model, version).window(since)
