"""Shadow traffic: copies of requests sent to another version, compared and thrown away.

:class:`ShadowRunner` owns a bounded queue and a few worker tasks. ``offer()`` never waits: when
the queue is full the copy is dropped and counted. A shadow's answer is never returned and never
cached, and a shadow's failure only increments a counter. Comparison per output: disagreement
rate for labels (integers, booleans, strings), mean absolute difference for scores, mean cosine
similarity for embeddings (float rows wider than 32). A copy runs in a copy of the offering
request's context (``contextvars``), so its trace span and log fields belong to that request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitstop.errors import PitstopError
from pitstop.monitoring.outputs import OutputKind, kind_of
from pitstop.protocol.tensor import InferRequest

log = logging.getLogger(__name__)

Outputs = Mapping[str, np.ndarray]
ShadowCall = Callable[[str, str, InferRequest], Coroutine[Any, Any, Outputs]]
"""``(model, target, request) -> outputs``: serve the copy without cache and without policy."""


@dataclass
class Comparison:
    """Running comparison of one shadow target against what answered the same requests."""

    requests: int = 0
    """Copies sent (answered or failed)."""
    failures: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def add(self, primary: Outputs, shadow: Outputs) -> None:
        for name, left in primary.items():
            right = shadow.get(name)
            if right is None or np.shape(right) != np.shape(left):
                continue
            kind, value, rows = compare(np.asarray(left), np.asarray(right))
            self.kinds[name] = kind
            self.sums[name] = self.sums.get(name, 0.0) + value * rows
            self.counts[name] = self.counts.get(name, 0) + rows

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "outputs": {
                name: {self.kinds[name]: self.sums[name] / self.counts[name]}
                for name in self.sums
                if self.counts[name]
            },
        }


def compare(left: np.ndarray, right: np.ndarray) -> tuple[str, float, int]:
    """``(kind, mean over rows, rows)`` for one output of the primary and the shadow."""
    rows = int(left.shape[0]) if left.ndim else 1
    kind = kind_of(left)
    if kind.discrete and kind_of(right).discrete:
        a, b = left.reshape(rows, -1), right.reshape(rows, -1)
        return "disagreement", float(np.mean(np.any(a != b, axis=1))), rows
    a = left.reshape(rows, -1).astype(np.float64)
    b = right.reshape(rows, -1).astype(np.float64)
    if kind is OutputKind.EMBEDDING:
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = np.sum(a * b, axis=1) / np.where(norms == 0, 1.0, norms)
        return "cosine", float(np.mean(cosine)), rows
    return "mean_abs_diff", float(np.mean(np.abs(a - b))), rows


@dataclass(frozen=True)
class _Copy:
    model: str
    target: str
    request: InferRequest
    primary: Outputs
    context: contextvars.Context


class ShadowRunner:
    def __init__(self, call: ShadowCall, capacity: int = 1000, workers: int = 2) -> None:
        self._call = call
        self._queue: asyncio.Queue[_Copy] = asyncio.Queue(maxsize=capacity)
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped: Counter[str] = Counter()
        self.comparisons: dict[tuple[str, str], Comparison] = {}

    def offer(self, model: str, target: str, request: InferRequest, primary: Outputs) -> None:
        """Queue a copy for ``target``, or drop it (counted) when the queue is full."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._work(), name=f"shadow-{i}") for i in range(self._workers)
            ]
        try:
            copy = _Copy(model, target, request, primary, contextvars.copy_context())
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            self.dropped[model] += 1

    def comparison(self, model: str, target: str) -> Comparison:
        found = self.comparisons.get((model, target))
        if found is None:
            found = self.comparisons[(model, target)] = Comparison()
        return found

    async def _work(self) -> None:
        while True:
            copy = await self._queue.get()
            comparison = self.comparison(copy.model, copy.target)
            comparison.requests += 1
            try:
                call = self._call(copy.model, copy.target, copy.request)
                outputs = await asyncio.get_running_loop().create_task(call, context=copy.context)
            except PitstopError as exc:
                comparison.failures += 1
                log.debug("shadow %s/%s failed: %s", copy.model, copy.target, exc)
            except Exception:
                comparison.failures += 1
                log.exception("shadow %s/%s raised", copy.model, copy.target)
            else:
                comparison.add(copy.primary, outputs)
            finally:
                self._queue.task_done()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
