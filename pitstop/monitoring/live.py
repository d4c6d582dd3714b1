"""The last hour of request rate, error rate and latency quantiles per model, for the console.

Every :data:`TICK_S` the server reads its request counters (every worker's, summed) into a
:class:`Sample`: per model, successes, errors and the latency histogram's bucket counts summed
over versions and transports. The last :data:`SAMPLES` samples are kept (one hour, about
``models x 20`` integers each). A :class:`Point` is the difference between two samples,
computed by the pure :func:`between`; quantiles are interpolated within a bucket as
Prometheus's ``histogram_quantile`` does. Counters that went down (a restarted worker) count
from zero. Nothing here blocks: a tick walks the counters on the event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final

from pitstop.monitoring.histogram import LATENCY_BUCKETS
from pitstop.monitoring.requests import ERROR, UNKNOWN_MODEL, RequestRecorder

TICK_S: Final = 10.0
SAMPLES: Final = 361
"""One hour of ticks, and the one before its first."""
QUANTILES: Final = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Counts:
    """One model's cumulative counters at one instant."""

    ok: int
    errors: int
    buckets: tuple[int, ...]
    """Requests per latency bucket (not cumulative), ``+Inf`` last."""


@dataclass(frozen=True)
class Sample:
    at: float
    """Wall-clock seconds (``time.time()``)."""
    models: dict[str, Counts]


@dataclass(frozen=True)
class Point:
    """What happened to one model between two samples."""

    at: float
    """The end of the interval."""
    seconds: float
    requests: int
    errors: int
    quantiles: tuple[float | None, ...]
    """Seconds at each of :data:`QUANTILES`; None without requests."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        p50, p95, p99 = self.quantiles
        return {
            "at": round(self.at, 3), "seconds": round(self.seconds, 3),
            "requests": self.requests, "errors": self.errors,
            "rate": round(self.rate, 4), "error_rate": round(self.error_rate, 6),
            "p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99),
        }  # fmt: skip


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def take(recorder: RequestRecorder, at: float) -> Sample:
    """Every model's counters now, summed over versions and transports."""
    found: dict[str, list[Any]] = {}
    width = len(LATENCY_BUCKETS) + 1
    for series in recorder:
        if series.model == UNKNOWN_MODEL:
            continue
        row = found.setdefault(series.model, [0, 0, [0] * width])
        for (_transport, outcome), histogram in list(series.durations.items()):
            counts = histogram.counts.tolist()
            row[1 if outcome == ERROR else 0] += int(sum(counts))
            row[2] = [a + int(b) for a, b in zip(row[2], counts, strict=True)]
    return Sample(at, {m: Counts(ok, err, tuple(b)) for m, (ok, err, b) in found.items()})


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of observations counted per bucket (``counts`` has one more entry
    than ``bounds``: ``+Inf``), interpolated linearly within its bucket; in the ``+Inf``
    bucket, the highest finite bound. None when nothing was observed."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0
    for index, count in enumerate(counts):
        if count > 0 and running + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])
            lower = 0.0 if index == 0 else float(bounds[index - 1])
            upper = float(bounds[index])
            return lower + (upper - lower) * max(0.0, rank - running) / count
        running += count
    return float(bounds[-1])


def between(before: Counts | None, after: Counts, seconds: float, at: float) -> Point:
    """The difference ``after - before``; a counter that went down started again from zero
    (a worker restarted), so ``after`` counts alone."""
    reset = before is not None and (
        after.ok < before.ok
        or after.errors < before.errors
        or any(a < b for a, b in zip(after.buckets, before.buckets, strict=True))
    )
    if before is None or reset:
        before = Counts(0, 0, (0,) * len(after.buckets))
    buckets = [a - b for a, b in zip(after.buckets, before.buckets, strict=True)]
    quantiles = tuple(quantile(q, LATENCY_BUCKETS, buckets) for q in QUANTILES)
    ok, errors = after.ok - before.ok, after.errors - before.errors
    return Point(at, seconds, ok + errors, errors, quantiles)


def series(samples: Sequence[Sample], model: str) -> list[Point]:
    """One point per consecutive pair of samples (oldest first) for ``model``."""
    points = []
    for before, after in pairwise(samples):
        counts = after.models.get(model)
        if counts is None:
            continue
        seconds = after.at - before.at
        points.append(between(before.models.get(model), counts, seconds, after.at))
    return points


class LiveSeries:
    """The bounded ring of samples; :meth:`tick` from one owned loop, reads from routes."""

    def __init__(
        self, recorder: Callable[[], RequestRecorder | None], clock: Callable[[], float] = time.time
    ) -> None:
        self._recorder = recorder
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=SAMPLES)

    def tick(self) -> None:
        recorder = self._recorder()
        if recorder is not None:
            self._samples.append(take(recorder, self._clock()))

    def models(self) -> set[str]:
        """Every model with requests in the kept hour or since."""
        found = {model for sample in self._samples for model in sample.models}
        recorder = self._recorder()
        if recorder is not None:
            found |= set(take(recorder, self._clock()).models)
        return found

    def points(self, models: Iterable[str], since: float = 0.0) -> dict[str, list[Point]]:
        """Per model, the points ending after ``since``, plus one ending now (from the last
        sample to the counters now) so a page sees the last seconds too."""
        samples = list(self._samples)
        recorder = self._recorder()
        if recorder is not None:
            samples.append(take(recorder, self._clock()))
        return {
            model: [p for p in series(samples, model) if p.at > since and p.seconds > 0]
            for model in models
        }

    def latest(self, seconds: float = 60.0) -> dict[str, Point]:
        """What happened to each model in about the last ``seconds``: from the oldest sample
        at most that old to the counters now (nothing before the first tick)."""
        recorder = self._recorder()
        if recorder is None:
            return {}
        now = take(recorder, self._clock())
        old = [s for s in self._samples if now.at - s.at <= seconds + TICK_S / 2]
        if not old or now.at <= old[0].at:
            return {}
        start = old[0]
        return {
            model: between(start.models.get(model), after, now.at - start.at, now.at)
            for model, after in now.models.items()
        }
