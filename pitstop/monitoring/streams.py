"""What the stream consumers of this server did: messages by outcome, latency, batch sizes, lag.

One :class:`StreamSeries` per consumed stream (its source address and model: both from the
server's settings, so labels stay bounded). Counts and histograms live in
:class:`~pitstop.monitoring.tally.Tally` cells, summed across the workers of one server as the
request series are; the lag is the broker's own figure for the whole group, read by each
consumer every ``lag_interval_s`` (the latest reading, not a sum).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Final

import numpy as np

from pitstop.monitoring.histogram import BATCH_BUCKETS, Histogram
from pitstop.monitoring.tally import Tally

AGE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5, 10, 30, 60,
                      300, 900, 3600)  # fmt: skip
"""Seconds from a message's storage by the broker to its acknowledgement: spans from
milliseconds (keeping up) to an hour (a backlog being worked off)."""

PROCESSING_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                             1.0, 2.5, 5.0, 10.0, 30.0)  # fmt: skip


class Outcome(enum.Enum):
    CONSUMED = "consumed"
    """Deliveries fetched (redeliveries included)."""
    ANSWERED = "answered"
    """Answers published and acknowledged."""
    DEAD_LETTERED = "dead_lettered"
    REDELIVERED = "redelivered"
    """Deliveries that were not a message's first."""
    RETRIED = "retried"
    """Messages given back for redelivery after a failed model call."""
    PUBLISH_FAILED = "publish_failed"
    """Answers or dead letters the broker did not take (their messages are delivered again)."""


OUTCOMES: Final = tuple(Outcome)


class StreamSeries:
    """One stream's figures."""

    __slots__ = ("_counts", "age", "batch", "model", "pending", "processing", "stream", "unacked")

    def __init__(self, stream: str, model: str, tally: Tally) -> None:
        self.stream = stream
        self.model = model
        key = ("streams", stream, model)
        self._counts = tally.cells((*key, "counts"), len(OUTCOMES))
        self.processing = Histogram(PROCESSING_BUCKETS, tally, (*key, "processing"))
        """Seconds from a delivery's fetch to its acknowledgement."""
        self.age = Histogram(AGE_BUCKETS, tally, (*key, "age"))
        """Seconds from the broker storing a message to its acknowledgement."""
        self.batch = Histogram(BATCH_BUCKETS, tally, (*key, "batch"))
        """Messages per fetched batch."""
        self.pending: int | None = None
        """Messages of the source no consumer of the group has received (None: not read yet)."""
        self.unacked: int | None = None

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self._counts[OUTCOMES.index(outcome)] += n

    def counts(self) -> dict[Outcome, int]:
        return dict(zip(OUTCOMES, self._counts.tolist(), strict=True))

    def settled(self, processing_s: np.ndarray, age_s: np.ndarray) -> None:
        """Messages acknowledged: how long each took here, and since the broker stored it."""
        if len(processing_s):
            self.processing.observe_many(processing_s)
        if len(age_s):
            self.age.observe_many(age_s)


class StreamRecorder:
    """The series of every stream this server consumes."""

    def __init__(self, tally: Tally | None = None) -> None:
        self._tally = tally if tally is not None else Tally()
        self._series: dict[tuple[str, str], StreamSeries] = {}

    @classmethod
    def over(cls, tally: Tally, lag_from: StreamRecorder | None = None) -> StreamRecorder:
        """The series whose cells ``tally`` holds (every worker's, gathered), with the lag
        readings of ``lag_from`` (this process's)."""
        recorder = cls(tally)
        for key in tally:
            if len(key) >= 4 and key[0] == "streams" and key[3] == "counts":
                stream, model = key[1], key[2]
                if isinstance(stream, str) and isinstance(model, str):
                    recorder.series(stream, model)
        if lag_from is not None:
            for own in lag_from:
                series = recorder.series(own.stream, own.model)
                series.pending, series.unacked = own.pending, own.unacked
        return recorder

    def series(self, stream: str, model: str) -> StreamSeries:
        found = self._series.get((stream, model))
        if found is None:
            found = self._series[(stream, model)] = StreamSeries(stream, model, self._tally)
        return found

    def __iter__(self) -> Iterator[StreamSeries]:
        return iter(list(self._series.values()))

    def __len__(self) -> int:
        return len(self._series)
