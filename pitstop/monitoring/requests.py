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

from pitstop.errors import error_kind
from pitstop.monitoring.attempt import Attempt, CacheUse
from pitstop.monitoring.histogram import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram
from pitstop.monitoring.outputs import OutputBehaviour

SUCCESS: Final = "success"
ERROR: Final = "error"
UNKNOWN_MODEL: Final = "_unknown"
"""Model label of requests for a model that is not registered: names cannot start with '_', so
it never collides, and random names sent by clients never become label values."""


class VersionSeries:
    """Everything recorded about one (model, version); ``version`` is None for requests that
    failed before a version was chosen (unknown model, no such alias, nothing loaded)."""

    __slots__ = (
        "batch_sizes",
        "cache_hits",
        "cache_misses",
        "compute",
        "durations",
        "errors",
        "model",
        "outputs",
        "queue",
        "rows",
        "version",
    )

    def __init__(self, model: str, version: int | None) -> None:
        self.model = model
        self.version = version
        self.durations: dict[tuple[str, str], Histogram] = {}
        """(transport, success|error) → request duration in seconds."""
        self.errors: dict[tuple[str, str], int] = {}
        """(transport, error type) → failed requests."""
        self.queue = Histogram(LATENCY_BUCKETS)
        self.compute = Histogram(LATENCY_BUCKETS)
        """One observation per runtime call (a batch counts once)."""
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.cache_hits = 0
        self.cache_misses = 0
        self.rows = 0
        """Predictions served: rows of the batch dimension of successful responses."""
        self.outputs = OutputBehaviour()

    def served(self, transport: str, seconds: float, rows: int) -> None:
        histogram = self.durations.get((transport, SUCCESS))
        if histogram is None:
            histogram = self.durations[(transport, SUCCESS)] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)
        self.rows += rows

    def failed(self, transport: str, error: BaseException, seconds: float) -> None:
        key = (transport, error_kind(error))
        self.errors[key] = self.errors.get(key, 0) + 1
        histogram = self.durations.get((transport, ERROR))
        if histogram is None:
            histogram = self.durations[(transport, ERROR)] = Histogram(LATENCY_BUCKETS)
        histogram.observe(seconds)

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
    """The :class:`VersionSeries` of every version this server has served since it started."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, int | None], VersionSeries] = {}

    def series(self, model: str, version: int | None) -> VersionSeries:
        key = (model, version)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = VersionSeries(model, version)
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
            series.cache_hits += 1
        elif attempt.cache is CacheUse.MISS:
            series.cache_misses += 1
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
