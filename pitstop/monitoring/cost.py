"""Cost per prediction, per model version, over a window.

A replica costs ``cost_per_hour``. Over a window, that cost is shared among versions by their
share of compute time (a version that keeps the runtime busy 90% of the time bears 90% of the
cost, idle time included), and divided by the predictions (rows) each served. With ``replicas``
replicas behind a balanced load balancer, the fleet costs ``replicas`` times as much and serves
about ``replicas`` times the predictions, so the cost per 1k predictions is the same; the report
scales the totals.

:class:`CostTracker` keeps cumulative usage snapshots (one per :meth:`~CostTracker.tick`, bounded
by ``keep_s``) so any window up to that can be reported; :func:`cost_rows` is the pure
arithmetic.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

VersionKey = tuple[str, int]


@dataclass(frozen=True)
class Usage:
    """Cumulative since start: predictions served and runtime compute seconds."""

    predictions: int
    compute_s: float


@dataclass(frozen=True)
class CostRow:
    model: str
    version: int
    predictions: int
    """Served by this replica in the window."""
    compute_s: float
    share: float
    """Of this replica's compute time in the window, 0..1."""
    cost: float
    """Of the whole fleet (``replicas`` x this replica's share) over the window."""
    cost_per_1k: float | None
    """None without predictions."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "predictions": self.predictions,
            "compute_s": self.compute_s, "share": self.share, "cost": self.cost,
            "cost_per_1k_predictions": self.cost_per_1k,
        }  # fmt: skip


def cost_rows(
    start: Mapping[VersionKey, Usage],
    end: Mapping[VersionKey, Usage],
    covered_s: float,
    cost_per_hour: float,
    replicas: int = 1,
) -> list[CostRow]:
    """Rows for every version that served in the window ``start`` → ``end`` (``covered_s``
    seconds), sorted by model and version. Pure."""
    deltas: dict[VersionKey, Usage] = {}
    for key, now in end.items():
        before = start.get(key, Usage(0, 0.0))
        predictions = now.predictions - before.predictions
        compute = max(0.0, now.compute_s - before.compute_s)
        if predictions > 0 or compute > 0:
            deltas[key] = Usage(predictions, compute)
    total_compute = sum(u.compute_s for u in deltas.values())
    replica_cost = cost_per_hour * covered_s / 3600.0
    rows = []
    for (model, version), usage in sorted(deltas.items()):
        if total_compute > 0:
            share = usage.compute_s / total_compute
        else:  # only cache hits: share by predictions
            share = usage.predictions / max(1, sum(u.predictions for u in deltas.values()))
        cost = replica_cost * share * replicas
        per_1k = cost / (usage.predictions * replicas) * 1000 if usage.predictions > 0 else None
        rows.append(
            CostRow(model, version, usage.predictions, usage.compute_s, share, cost, per_1k)
        )
    return rows


@dataclass(frozen=True)
class CostReport:
    window_s: float
    """Requested window."""
    covered_s: float
    """What the snapshots cover (shorter than the window soon after start)."""
    cost_per_hour: float
    replicas: int
    rows: list[CostRow]

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "covered_s": self.covered_s,
            "cost_per_hour": self.cost_per_hour,
            "replicas": self.replicas,
            "versions": [row.to_json() for row in self.rows],
        }


class CostTracker:
    def __init__(
        self,
        cost_per_hour: float,
        replicas: int = 1,
        *,
        keep_s: float = 24 * 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cost_per_hour = cost_per_hour
        self.replicas = replicas
        self._keep_s = keep_s
        self._clock = clock
        self._times: deque[float] = deque()
        self._snapshots: deque[dict[VersionKey, Usage]] = deque()
        self.tick({})

    def tick(self, usage: Mapping[VersionKey, Usage]) -> None:
        """Remember cumulative ``usage`` now; forget snapshots older than ``keep_s``."""
        now = self._clock()
        self._times.append(now)
        self._snapshots.append(dict(usage))
        while len(self._times) > 2 and now - self._times[1] > self._keep_s:
            self._times.popleft()
            self._snapshots.popleft()

    def report(self, usage: Mapping[VersionKey, Usage], window_s: float) -> CostReport:
        """Cost over the last ``window_s`` seconds, with ``usage`` as the current totals."""
        now = self._clock()
        times = list(self._times)
        # The newest snapshot at or before the window's start, else the oldest one.
        index = max(0, bisect.bisect_right(times, now - window_s) - 1)
        covered = now - times[index]
        rows = cost_rows(self._snapshots[index], usage, covered, self.cost_per_hour, self.replicas)
        return CostReport(window_s, covered, self.cost_per_hour, self.replicas, rows)
