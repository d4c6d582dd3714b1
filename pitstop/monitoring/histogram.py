"""A fixed-bucket histogram in plain Python: what the request path records into.

Recording is one ``bisect`` and two additions, with no lock: every recorder is updated on the
event loop only, and the exporter reads it there too (a scrape sees a consistent-enough view;
Prometheus tolerates a count that is a request ahead of a bucket). Bucket bounds are upper
bounds, inclusive, as Prometheus defines ``le``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

import numpy as np

from pitstop.monitoring.tally import Key, Kind, Tally

LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds, for ms-scale inference: fine below 10 ms where tiny models live, coarse above."""

LOAD_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds, for loading a version (fetch, verify, deserialise, warm up)."""

BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Rows per runtime call."""

SCORE_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Model scores and confidences, usually probabilities in [0, 1]."""


class Histogram:
    """Counts per bucket, their sum and total; cumulative only when read. The numbers live in
    cells of a :class:`~pitstop.monitoring.tally.Tally` when one is given (shared by the
    workers of one server), else in this process's memory."""

    __slots__ = ("_total", "bounds", "counts")

    def __init__(self, bounds: Sequence[float], tally: Tally | None = None, key: Key = ()) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        tally = tally if tally is not None else Tally()
        self.counts = tally.cells((*key, "buckets"), len(self.bounds) + 1)
        """Per bucket, not cumulative; the last one is ``+Inf``."""
        self._total = tally.cells((*key, "sum"), 1, Kind.TOTAL)

    @property
    def total(self) -> float:
        return float(self._total[0])

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self._total[0] += value

    def observe_many(self, values: np.ndarray) -> None:
        """:meth:`observe` every value of a float array, vectorised."""
        buckets = np.searchsorted(np.asarray(self.bounds), values, side="left")
        self.counts += np.bincount(buckets, minlength=len(self.counts))
        self._total[0] += float(values.sum())

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` for every bucket, ``+Inf`` last."""
        running = 0
        out: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts.tolist(), strict=True):
            running += count
            out.append((bound, running))
        return out
