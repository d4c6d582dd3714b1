"""Per-version request statistics for the V2 statistics extension (Triton's field names).

An observer of the DataPlane's attempts (see :mod:`pitstop.monitoring.attempt`): updated only on
the event loop, O(1) per attempt; durations in nanoseconds from the monotonic clock. What the
transports answer is :meth:`Statistics.select`; each encodes the rows (``to_json`` for REST).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pitstop.monitoring.attempt import Attempt, CacheUse


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class VersionStatistics:
    model: str
    version: int
    inference_count: int = 0
    """Inferences counted per item of the batch dimension."""
    execution_count: int = 0
    """Runtime calls (one call may serve several inferences once batching exists)."""
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    batch_sizes: dict[int, Duration] = field(default_factory=dict)
    """Runtime calls by batch size, with their compute time (Triton's ``batch_stats``)."""

    def record(self, attempt: Attempt) -> None:
        """Count one attempt on this version."""
        cache = attempt.cache
        if cache is CacheUse.HIT:
            self.cache_hit.add(attempt.cache_ns)
            self.inference_count += attempt.rows
        elif cache is CacheUse.MISS:
            self.cache_miss.add(attempt.cache_ns)
        if attempt.executed:
            # One request served by a runtime call (the call itself is counted once).
            counts = attempt.counts_execution
            self.inference_count += attempt.batch_size if counts else 0
            self.last_inference_ms = time.time_ns() // 1_000_000
            self.queue.add(attempt.queue_ns)
            if counts:
                self.execution_count += 1
                self.compute_infer.add(attempt.compute_ns)
                self.batch_sizes.setdefault(attempt.batch_size, Duration()).add(attempt.compute_ns)
        (self.success if attempt.error is None else self.fail).add(attempt.elapsed_ns)

    def to_json(self) -> dict[str, Any]:
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
                # Input and output preparation are not timed apart from compute_infer, but
                # Triton's clients (perf_analyzer) require the three counts to be equal.
                "compute_input": Duration(self.compute_infer.count, 0).to_json(),
                "compute_infer": self.compute_infer.to_json(),
                "compute_output": Duration(self.compute_infer.count, 0).to_json(),
                "cache_hit": self.cache_hit.to_json(),
                "cache_miss": self.cache_miss.to_json(),
            },
            "batch_stats": [
                {"batch_size": size, "compute_infer": duration.to_json()}
                for size, duration in sorted(self.batch_sizes.items())
            ],
        }


class Statistics:
    """Statistics of every version this server has served since it started."""

    def __init__(self) -> None:
        self._by_version: dict[tuple[str, int], VersionStatistics] = {}

    def of(self, model: str, version: int) -> VersionStatistics:
        key = (model, version)
        stats = self._by_version.get(key)
        if stats is None:
            stats = self._by_version[key] = VersionStatistics(model, version)
        return stats

    def observe_attempt(self, attempt: Attempt) -> None:
        if attempt.version is not None:
            self.of(attempt.model, attempt.version).record(attempt)

    def select(
        self, model: str | None = None, version: int | None = None
    ) -> list[VersionStatistics]:
        return [
            stats
            for (name, number), stats in sorted(self._by_version.items())
            if (model is None or name == model) and (version is None or number == version)
        ]
