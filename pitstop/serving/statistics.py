"""Per-version request statistics for the V2 statistics extension (Triton's field names).

An observer of the DataPlane's attempts (see :mod:`pitstop.monitoring.attempt`): updated only on
the event loop, O(1) per attempt; durations in nanoseconds from the monotonic clock. What the
transports answer is :meth:`Statistics.select`; each encodes the rows (``to_json`` for REST).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pitstop.monitoring.attempt import Attempt, CacheUse
from pitstop.monitoring.tally import Key, Kind, Tally


class Duration:
    """A count and the nanoseconds it took, in two cells."""

    __slots__ = ("_cells",)

    def __init__(self, cells: np.ndarray) -> None:
        self._cells = cells

    @property
    def count(self) -> int:
        return int(self._cells[0])

    @property
    def ns(self) -> int:
        return int(self._cells[1])

    def add(self, ns: int) -> None:
        cells = self._cells
        cells[0] += 1
        cells[1] += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


_DURATIONS = ("success", "fail", "queue", "compute_infer", "cache_hit", "cache_miss")


class VersionStatistics:
    """One version's statistics, in cells of a tally under ``("statistics", model, version)``."""

    __slots__ = (
        "_counts", "_key", "_last", "_tally", "batch_sizes", "cache_hit", "cache_miss",
        "compute_infer", "fail", "model", "queue", "success", "version",
    )  # fmt: skip

    def __init__(self, model: str, version: int, tally: Tally) -> None:
        self.model = model
        self.version = version
        self._tally = tally
        self._key: Key = ("statistics", model, version)
        self._counts = tally.cells((*self._key, "counts"), 2)
        self._last = tally.cells((*self._key, "last_inference"), 1, Kind.LATEST)
        self.success, self.fail, self.queue, self.compute_infer, self.cache_hit, self.cache_miss = (
            Duration(tally.cells((*self._key, name), 2)) for name in _DURATIONS
        )
        self.batch_sizes: dict[int, Duration] = {}
        """Runtime calls by batch size, with their compute time (Triton's ``batch_stats``)."""

    @property
    def inference_count(self) -> int:
        """Inferences counted per item of the batch dimension."""
        return int(self._counts[0])

    @property
    def execution_count(self) -> int:
        """Runtime calls (one call may serve several inferences once batching exists)."""
        return int(self._counts[1])

    @property
    def last_inference_ms(self) -> int:
        return int(self._last[0])

    def batch(self, size: int) -> Duration:
        found = self.batch_sizes.get(size)
        if found is None:
            cells = self._tally.cells((*self._key, "batch", size), 2)
            found = self.batch_sizes[size] = Duration(cells)
        return found

    def record(self, attempt: Attempt) -> None:
        """Count one attempt on this version."""
        cache = attempt.cache
        if cache is CacheUse.HIT:
            self.cache_hit.add(attempt.cache_ns)
            self._counts[0] += attempt.rows
        elif cache is CacheUse.MISS:
            self.cache_miss.add(attempt.cache_ns)
        if attempt.executed:
            # One request served by a runtime call (the call itself is counted once).
            counts = attempt.counts_execution
            self._counts[0] += attempt.batch_size if counts else 0
            self._last[0] = time.time_ns() // 1_000_000
            self.queue.add(attempt.queue_ns)
            if counts:
                self._counts[1] += 1
                self.compute_infer.add(attempt.compute_ns)
                self.batch(attempt.batch_size).add(attempt.compute_ns)
        (self.success if attempt.error is None else self.fail).add(attempt.elapsed_ns)

    def to_json(self) -> dict[str, Any]:
        # Input and output preparation are not timed apart from compute_infer, but Triton's
        # clients (perf_analyzer) require the three counts to be equal.
        prepared = {"count": self.compute_infer.count, "ns": 0}
        return {
            "name": self.model,
            "version": str(self.version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_json(),
                "fail": self.fail.to_json(),
                "queue": self.queue.to_json(),
                "compute_input": prepared,
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": prepared,
                "cache_hit": self.cache_hit.to_json(),
                "cache_miss": self.cache_miss.to_json(),
            },
            "batch_stats": [
                {"batch_size": size, "compute_infer": duration.to_json()}
                for size, duration in sorted(self.batch_sizes.items())
            ],
        }


class Statistics:
    """Statistics of every version this server has served since it started, in ``tally``
    (this process's memory unless given). ``everyone`` gathers the cells of every worker of the
    server, when there are several: :meth:`select` answers from those."""

    def __init__(
        self, tally: Tally | None = None, everyone: Callable[[], Tally] | None = None
    ) -> None:
        self._tally = tally if tally is not None else Tally()
        self._everyone = everyone
        self._by_version: dict[tuple[str, int], VersionStatistics] = {}

    @classmethod
    def over(cls, tally: Tally) -> Statistics:
        """The statistics whose cells ``tally`` holds, for reading."""
        statistics = cls(tally)
        for key in tally:
            if len(key) < 4 or key[0] != "statistics":
                continue
            model, version = key[1], key[2]
            if not isinstance(model, str) or not isinstance(version, int):
                continue
            stats = statistics.of(model, version)
            if key[3] == "batch" and len(key) == 5 and isinstance(key[4], int):
                stats.batch(key[4])
        return statistics

    def of(self, model: str, version: int) -> VersionStatistics:
        key = (model, version)
        stats = self._by_version.get(key)
        if stats is None:
            stats = self._by_version[key] = VersionStatistics(model, version, self._tally)
        return stats

    def observe_attempt(self, attempt: Attempt) -> None:
        if attempt.version is not None:
            self.of(attempt.model, attempt.version).record(attempt)

    def select(
        self, model: str | None = None, version: int | None = None
    ) -> list[VersionStatistics]:
        source = self if self._everyone is None else Statistics.over(self._everyone())
        return [
            stats
            for (name, number), stats in sorted(source._by_version.items())
            if (model is None or name == model) and (version is None or number == version)
        ]
