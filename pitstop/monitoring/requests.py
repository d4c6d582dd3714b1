"""Per-version request series: durations, errors by type, queue wait, compute time, batch sizes,
cache hits, rows served and output behaviour. What ``/metrics`` exports about requests.

An observer of the DataPlane's attempts (see :mod:`pitstop.monitoring.attempt`). Every update
is O(1): a dict lookup, a ``bisect`` and a few additions, no allocation once a (transport,
outcome) pair has been seen, and no lock (event loop only). Labels are bounded: model and
version come from the registry, transports and error types from fixed tables; an unknown model
is recorded as :data:`UNKNOWN_MODEL`, never by its name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np

from pitstop.errors import error_kind
from pitstop.monitoring.attempt import Attempt, CacheUse
from pitstop.monitoring.histogram import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram
from pitstop.monitoring.outputs import OutputBehaviour
from pitstop.monitoring.tally import Key, Tally

SUCCESS: Final = "success"
ERROR: Final = "error"
UNKNOWN_MODEL: Final = "_unknown"
"""Model label of requests for a model that is not registered: names cannot start with '_', so
it never collides, and random names sent by clients never become label values."""


class VersionSeries:
    """Everything recorded about one (model, version); ``version`` is None for requests that
    failed before a version was chosen (unknown model, no such alias, nothing loaded). The
    numbers live in cells of ``tally`` under keys starting ``("requests", model, version)``."""

    __slots__ = (
        "_counts",
        "_key",
        "_tally",
        "batch_sizes",
        "compute",
        "durations",
        "errors",
        "model",
        "outputs",
        "queue",
        "version",
    )

    def __init__(self, model: str, version: int | None, tally: Tally) -> None:
        self.model = model
        self.version = version
        self._tally = tally
        self._key: Key = ("requests", model, version)
        self.durations: dict[tuple[str, str], Histogram] = {}
        """(transport, success|error) → request duration in seconds."""
        self.errors: dict[tuple[str, str], np.ndarray] = {}
        """(transport, error type) → one cell: failed requests."""
        self.queue = Histogram(LATENCY_BUCKETS, tally, (*self._key, "queue"))
        self.compute = Histogram(LATENCY_BUCKETS, tally, (*self._key, "compute"))
        """One observation per runtime call (a batch counts once)."""
        self.batch_sizes = Histogram(BATCH_BUCKETS, tally, (*self._key, "batch"))
        self._counts = tally.cells((*self._key, "counts"), 3)
        """Cache hits, cache misses, rows served."""
        self.outputs = OutputBehaviour(tally, (*self._key, "outputs"))

    @property
    def cache_hits(self) -> int:
        return int(self._counts[0])

    @property
    def cache_misses(self) -> int:
        return int(self._counts[1])

    @property
    def rows(self) -> int:
        """Predictions served: rows of the batch dimension of successful responses."""
        return int(self._counts[2])

    def duration(self, transport: str, outcome: str) -> Histogram:
        histogram = self.durations.get((transport, outcome))
        if histogram is None:
            key = (*self._key, "duration", transport, outcome)
            histogram = self.durations[(transport, outcome)] = Histogram(
                LATENCY_BUCKETS, self._tally, key
            )
        return histogram

    def error_cell(self, transport: str, kind: str) -> np.ndarray:
        cell = self.errors.get((transport, kind))
        if cell is None:
            key = (*self._key, "errors", transport, kind)
            cell = self.errors[(transport, kind)] = self._tally.cells(key)
        return cell

    def cached(self, hit: bool) -> None:
        self._counts[0 if hit else 1] += 1

    def served(self, transport: str, seconds: float, rows: int) -> None:
        self.duration(transport, SUCCESS).observe(seconds)
        self._counts[2] += rows

    def failed(self, transport: str, error: BaseException, seconds: float) -> None:
        self.error_cell(transport, error_kind(error))[0] += 1
        self.duration(transport, ERROR).observe(seconds)

    def executed(self, queue_ns: int, compute_ns: int, batch_size: int, counts: bool) -> None:
        """One request ran; ``counts`` is true for one request per runtime call, which carries
        the call's compute time and batch size."""
        self.queue.observe(queue_ns / 1e9)
        if counts:
            self.compute.observe(compute_ns / 1e9)
            self.batch_sizes.observe(batch_size)

    def requests(self, transport: str, outcome: str) -> int:
        histogram = self.durations.get((transport, outcome))
        return histogram.count if histogram is not None else 0


class RequestRecorder:
    """The :class:`VersionSeries` of every version this server has served since it started,
    with their numbers in ``tally`` (this process's memory unless given)."""

    def __init__(self, tally: Tally | None = None) -> None:
        self._tally = tally if tally is not None else Tally()
        self._series: dict[tuple[str, int | None], VersionSeries] = {}

    @classmethod
    def over(cls, tally: Tally) -> RequestRecorder:
        """The series whose cells ``tally`` holds (e.g. every worker's, gathered), for reading."""
        recorder = cls(tally)
        for key in tally:
            if len(key) < 4 or key[0] != "requests" or not isinstance(key[1], str):
                continue
            model, version, part = key[1], key[2], key[3]
            if version is not None and not isinstance(version, int):
                continue
            series = recorder.series(model, version)
            if len(key) < 6 or not isinstance(key[4], str) or not isinstance(key[5], str):
                continue
            if part == "duration":
                series.duration(key[4], key[5])
            elif part == "errors":
                series.error_cell(key[4], key[5])
            elif part == "outputs" and key[4] == "class":
                series.outputs.class_cell(key[5])
        return recorder

    def series(self, model: str, version: int | None) -> VersionSeries:
        key = (model, version)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = VersionSeries(model, version, self._tally)
        return found

    def observe_attempt(self, attempt: Attempt) -> None:
        seconds = attempt.elapsed_ns / 1e9
        error = attempt.error
        if attempt.version is None:
            # Failed before a version was chosen; client-chosen names never become labels.
            model = attempt.model if attempt.registered else UNKNOWN_MODEL
            if error is not None:
                self.series(model, None).failed(attempt.transport, error, seconds)
            return
        series = self.series(attempt.model, attempt.version)
        if attempt.cache is CacheUse.HIT:
            series.cached(hit=True)
        elif attempt.cache is CacheUse.MISS:
            series.cached(hit=False)
        if attempt.executed:
            series.executed(
                attempt.queue_ns, attempt.compute_ns, attempt.batch_size, attempt.counts_execution
            )
        if error is not None:
            series.failed(attempt.transport, error, seconds)
            return
        series.served(attempt.transport, seconds, attempt.rows)
        series.outputs.observe(attempt.outputs)

    def __iter__(self) -> Iterator[VersionSeries]:
        return iter(list(self._series.values()))
