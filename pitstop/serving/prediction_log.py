"""The record of recent predictions that feedback is joined to.

An :class:`~pitstop.monitoring.attempt.Observer`: every answered request with a prediction id
(see :mod:`pitstop.protocol.prediction_id`) becomes a
:class:`~pitstop.registry.PredictionRecord` — model, id, version, arm, time, one value per row
of its first output (at most :data:`MAX_ROWS`) — kept in memory, newest last, at most
``capacity`` of them and none older than ``ttl_s`` (memory: about 300 bytes each).

With a :class:`PredictionStore` (the registry's ``predictions`` table,
``PITSTOP_PREDICTIONS=registry``) records are also written there by :meth:`PredictionLog.run`,
an owned loop, in batches every ``flush_s``; at most ``capacity`` wait for it (more are dropped
and counted, never blocking a request). Feedback arriving at any worker or replica then finds
them; the loop also prunes rows older than ``ttl_s``. :meth:`PredictionLog.find` looks in
memory first, then writes what is pending and asks the store, and asks it once more after one
flush interval for ids still missing (another worker's batch may not have landed yet).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import numpy as np

from pitstop.errors import RegistryUnavailable
from pitstop.monitoring.attempt import Attempt
from pitstop.monitoring.outputs import OutputKind, kind_of, row_values
from pitstop.protocol.prediction_id import MAX_LENGTH, issued_at
from pitstop.registry import PredictionRecord

log = logging.getLogger(__name__)

MAX_ROWS: Final = 16
PRUNE_EVERY_S: Final = 60.0


class PredictionStore(Protocol):
    """Where predictions outlive this process (the registry). Blocking; called in threads."""

    def add_predictions(self, records: list[PredictionRecord]) -> None: ...

    def find_predictions(self, model: str, ids: Collection[str]) -> dict[str, PredictionRecord]:
        """The stored predictions of ``model`` among ``ids``."""
        ...

    def prune_predictions(self, before: datetime) -> int: ...


def predicted(outputs: Mapping[str, np.ndarray]) -> tuple[float | str, ...]:
    """One value per row of the first output (at most :data:`MAX_ROWS`): labels as they are
    (bytes decoded), scores as they are, the argmax of probabilities, an embedding's norm."""
    for array in outputs.values():
        array = np.asarray(array)
        rows = array[:MAX_ROWS] if array.ndim else array.reshape(1)
        if rows.dtype.kind in "OSU":
            flat = rows.reshape(rows.shape[0], -1)[:, 0]
            return tuple(
                item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
                for item in flat
            )
        kind = kind_of(rows)
        if kind in (OutputKind.SCORE, OutputKind.LABEL, OutputKind.CODES):
            return tuple(float(v) for v in rows.reshape(rows.shape[0], -1)[:, 0].tolist())
        return tuple(row_values(rows, kind).tolist())
    return ()


class PredictionLog:
    """Recent predictions (see the module docstring)."""

    def __init__(
        self,
        capacity: int,
        ttl_s: float,
        store: PredictionStore | None = None,
        *,
        flush_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._capacity = capacity
        self._ttl_s = ttl_s
        self._store = store
        self._flush_s = flush_s
        self._clock = clock
        self._recent: collections.OrderedDict[tuple[str, str], PredictionRecord] = (
            collections.OrderedDict()
        )
        self._pending: collections.deque[PredictionRecord] = collections.deque()
        self._flushing = asyncio.Lock()
        self.dropped = 0
        """Predictions not written to the store because too many were waiting."""

    def observe_attempt(self, attempt: Attempt) -> None:
        if (
            attempt.prediction_id is None
            or not attempt.ok
            or not attempt.final
            or attempt.version is None
            or len(attempt.prediction_id) > MAX_LENGTH
        ):
            return
        self.record(
            attempt.model, attempt.prediction_id, attempt.version, attempt.arm, attempt.outputs
        )

    def record(
        self,
        model: str,
        prediction_id: str,
        version: int,
        arm: str,
        outputs: Mapping[str, np.ndarray],
    ) -> None:
        """Keep one prediction (O(rows of its first output, at most 16); no I/O)."""
        at = datetime.fromtimestamp(self._clock(), UTC)
        record = PredictionRecord(model, prediction_id, version, arm, at, predicted(outputs))
        key = (model, prediction_id)
        recent = self._recent
        recent.pop(key, None)
        recent[key] = record
        while len(recent) > self._capacity:
            recent.popitem(last=False)
        if self._store is not None:
            if len(self._pending) >= self._capacity:
                self.dropped += 1
            else:
                self._pending.append(record)

    def horizon(self) -> float:
        """Unix seconds before which a generated id can no longer be found: the retention, or
        in memory alone the oldest prediction still kept once the log is full."""
        limit = self._clock() - self._ttl_s
        if self._store is None and len(self._recent) >= self._capacity:
            oldest = next(iter(self._recent.values()))
            limit = max(limit, oldest.at.timestamp())
        return limit

    async def find(
        self, model: str, ids: Collection[str]
    ) -> tuple[dict[str, PredictionRecord], set[str]]:
        """(the predictions of ``model`` among ``ids``, the ids that expired); ids in neither
        are unknown. Event loop; waits at most about two flush intervals on the store."""
        cutoff = datetime.fromtimestamp(self._clock() - self._ttl_s, UTC)
        found: dict[str, PredictionRecord] = {}
        for prediction_id in ids:
            record = self._recent.get((model, prediction_id))
            if record is not None and record.at >= cutoff:
                found[prediction_id] = record
        missing = [i for i in ids if i not in found]
        if missing and self._store is not None:
            await self.flush()
            for attempt in range(2):
                stored = await asyncio.to_thread(self._store.find_predictions, model, missing)
                found.update({i: r for i, r in stored.items() if r.at >= cutoff})
                missing = [i for i in missing if i not in found]
                if not missing or attempt == 1:
                    break
                await asyncio.sleep(self._flush_s * 2)  # another worker's batch may be on its way
        horizon = self.horizon()
        expired = {i for i in missing if (issued_at(i) or horizon) < horizon}
        return found, expired

    async def flush(self) -> None:
        """Write the pending predictions to the store (one batch at a time)."""
        store = self._store
        if store is None:
            return
        async with self._flushing:
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(5_000, len(self._pending)))]
                try:
                    await asyncio.to_thread(store.add_predictions, batch)
                except BaseException:
                    self.dropped += len(batch)
                    raise

    async def run(self) -> None:
        """Write pending predictions every ``flush_s`` and prune the store's old ones every
        minute, until cancelled; never fatal (a batch the store refused is dropped, counted)."""
        store = self._store
        if store is None:
            return
        pruned = 0.0
        while True:
            await asyncio.sleep(self._flush_s)
            try:
                await self.flush()
                if time.monotonic() - pruned >= PRUNE_EVERY_S:
                    before = datetime.fromtimestamp(self._clock(), UTC) - timedelta(
                        seconds=self._ttl_s
                    )
                    await asyncio.to_thread(store.prune_predictions, before)
                    pruned = time.monotonic()
            except RegistryUnavailable as exc:
                log.warning("predictions wait for the registry: %s", exc)
            except Exception:
                log.exception("writing predictions failed")
