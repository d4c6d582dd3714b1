"""Dynamic batching: concurrent requests to one version share one runtime call.

One bounded queue per priority level (Triton semantics: level 1 is the highest), one future per
request, one drain task, at most ``instances`` batches in flight. A batch takes compatible requests
(same input names, datatypes and non-batch dimensions) in priority then arrival order, up to
``max_batch_size`` rows. It is dispatched at once when it reaches ``max_batch_size`` or a preferred
size, else when its oldest request has waited ``max_queue_delay_microseconds``. While every
instance is busy the queue fills, so batches grow with load (adaptive batching) and never wait on
a timer. A request whose deadline passes before its batch starts is never executed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pitstop.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    Overloaded,
    PitstopError,
    Unavailable,
)
from pitstop.registry.options import BatchingOptions
from pitstop.serving.execution import (
    Arrays,
    DirectExecution,
    Executed,
    Execution,
    Predict,
    call_runtime,
)


@dataclass(frozen=True)
class Queued:
    """What the batching decision sees of one queued request."""

    rows: int
    key: tuple[Any, ...]
    enqueued: float
    """Monotonic seconds when it was queued."""
    deadline: float | None


@dataclass(frozen=True)
class BatchDecision:
    expired: tuple[int, ...]
    """Requests whose deadline has passed: fail them, never execute them."""
    take: tuple[int, ...]
    """Requests to run now as one batch; empty means wait."""
    wait_s: float | None
    """With nothing to take: decide again after this long, or on the next arrival (None)."""


def decide(queued: Sequence[Queued], now: float, options: BatchingOptions) -> BatchDecision:
    """The next batch from ``queued`` (in priority, then arrival order) at time ``now``.

    Pure: tested as a table with made-up times (tests/serving/test_batcher.py).
    """
    expired = tuple(i for i, q in enumerate(queued) if q.deadline is not None and now >= q.deadline)
    dead = set(expired)
    live = [i for i in range(len(queued)) if i not in dead]
    if not live:
        return BatchDecision(expired, (), None)
    first = queued[live[0]]
    chosen: list[int] = []
    rows = 0
    for i in live:
        item = queued[i]
        if item.key == first.key and rows + item.rows <= options.max_batch_size:
            chosen.append(i)
            rows += item.rows
    delay = options.max_queue_delay_microseconds / 1e6
    if rows >= options.max_batch_size or delay == 0:
        return BatchDecision(expired, tuple(chosen), None)
    preferred = set(options.preferred_batch_size)
    total = 0
    best: list[int] = []
    for position, i in enumerate(chosen):
        total += queued[i].rows
        if total in preferred:
            best = chosen[: position + 1]
    if best:
        return BatchDecision(expired, tuple(best), None)
    waited = now - min(queued[i].enqueued for i in chosen)
    if waited >= delay:
        return BatchDecision(expired, tuple(chosen), None)
    return BatchDecision(expired, (), delay - waited)


@dataclass(eq=False)
class _Item:
    inputs: Arrays
    queued: Queued
    future: asyncio.Future[Executed]
    started: bool = False


def batch_key(inputs: Arrays) -> tuple[Any, ...]:
    """Requests batch together only when names, dtypes and non-batch dimensions agree."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


def batch_rows(inputs: Arrays, label: str) -> int:
    rows = {int(a.shape[0]) for a in inputs.values() if a.ndim}
    if len(rows) != 1 or any(a.ndim == 0 for a in inputs.values()):
        raise InvalidInput(f"{label} batches requests: every input needs the same first dimension")
    return rows.pop()


@dataclass
class Batcher:
    predict: Predict
    pool: Executor
    options: BatchingOptions
    label: str
    clock: Callable[[], float] = time.monotonic
    _queues: list[deque[_Item]] = field(init=False)
    _size: int = field(init=False, default=0)
    _wakeup: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _slots: asyncio.Semaphore = field(init=False)
    _running: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _drainer: asyncio.Task[None] | None = field(init=False, default=None)
    _closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._queues = [deque() for _ in range(self.options.priority_levels)]
        self._slots = asyncio.Semaphore(self.options.instances)

    @property
    def queued(self) -> int:
        """Requests waiting for a batch (running batches are not counted)."""
        return self._size

    # -- the request side ------------------------------------------------------------------------

    async def run(self, inputs: Arrays, deadline: float | None, priority: int) -> Executed:
        options = self.options
        if self._closed:
            raise Unavailable(f"{self.label} is shutting down")
        rows = batch_rows(inputs, self.label)
        if rows > options.max_batch_size:
            raise InvalidInput(
                f"batch of {rows} exceeds {self.label}'s max_batch_size {options.max_batch_size}"
            )
        if self._size >= options.max_queue_size:
            raise Overloaded(f"{self.label}: queue full ({options.max_queue_size} requests)")
        now = self.clock()
        if deadline is None and options.default_timeout_microseconds:
            deadline = now + options.default_timeout_microseconds / 1e6
        level = min(max(priority or options.default_priority_level, 1), options.priority_levels)
        loop = asyncio.get_running_loop()
        item = _Item(inputs, Queued(rows, batch_key(inputs), now, deadline), loop.create_future())
        self._queues[level - 1].append(item)
        self._size += 1
        self._wakeup.set()
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(), name=f"batcher {self.label}")
        if deadline is None:
            return await item.future
        try:
            async with asyncio.timeout(max(0.0, deadline - now)):
                return await asyncio.shield(item.future)
        except TimeoutError:
            if item.started:  # already running: its result is on the way
                return await item.future
            item.future.cancel()
            raise DeadlineExceeded(
                f"{self.label}: the request's deadline passed in the queue"
            ) from None

    # -- the drain side --------------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _remove(self, item: _Item) -> None:
        for queue in self._queues:
            if item in queue:
                queue.remove(item)
                self._size -= 1
                return

    async def _collect(self) -> list[_Item]:
        while True:
            items = [item for queue in self._queues for item in queue]
            for item in items:
                if item.future.done():  # its caller gave up (deadline or disconnect)
                    self._remove(item)
            items = [item for item in items if not item.future.done()]
            decision = decide([item.queued for item in items], self.clock(), self.options)
            for index in decision.expired:
                self._remove(items[index])
                items[index].future.set_exception(
                    DeadlineExceeded(f"{self.label}: the request's deadline passed in the queue")
                )
            if decision.take:
                batch = [items[index] for index in decision.take]
                for item in batch:
                    self._remove(item)
                    item.started = True
                return batch
            self._wakeup.clear()
            try:
                async with asyncio.timeout(decision.wait_s):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _execute(self, batch: list[_Item]) -> None:
        try:
            rows = [item.queued.rows for item in batch]

            def work() -> tuple[dict[str, np.ndarray], int, int]:
                begin = time.monotonic_ns()
                if len(batch) == 1:
                    inputs = batch[0].inputs
                else:
                    inputs = {
                        name: np.concatenate([item.inputs[name] for item in batch])
                        for name in batch[0].inputs
                    }
                produced = call_runtime(self.predict, inputs, self.label)
                return produced, begin, time.monotonic_ns()

            loop = asyncio.get_running_loop()
            try:
                produced, begin, end = await loop.run_in_executor(self.pool, work)
                parts = split_outputs(produced, rows, self.label)
            except PitstopError as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            total = sum(rows)
            for position, (item, outputs) in enumerate(zip(batch, parts, strict=True)):
                if not item.future.done():
                    queue_ns = max(0, begin - round(item.queued.enqueued * 1e9))
                    item.future.set_result(
                        Executed(outputs, queue_ns, end - begin, total, position == 0)
                    )
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Refuse new requests, fail what is still queued, finish running batches and stop the
        drain task. The manager calls this only once no request holds the version, so the queue
        is normally empty by then."""
        self._closed = True
        for queue in self._queues:
            while queue:
                item = queue.popleft()
                if not item.future.done():
                    item.future.set_exception(Unavailable(f"{self.label} was unloaded"))
        self._size = 0
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def split_outputs(
    produced: Mapping[str, np.ndarray], rows: list[int], label: str
) -> list[dict[str, np.ndarray]]:
    """Cut a batch's outputs back into per-request outputs along the first dimension."""
    total = sum(rows)
    for name, array in produced.items():
        if np.ndim(array) == 0 or np.shape(array)[0] != total:
            raise InternalError(
                f"{label} broke the batch-size contract: output {name!r} has shape "
                f"{list(np.shape(array))} for a batch of {total}"
            )
    if len(rows) == 1:
        return [dict(produced)]
    bounds = np.cumsum(rows)[:-1]
    pieces = {name: np.split(np.asarray(array), bounds) for name, array in produced.items()}
    return [{name: pieces[name][i] for name in produced} for i in range(len(rows))]


def execution_for(
    batching: BatchingOptions | None,
    predict: Predict,
    pool: Executor,
    max_queue_size: int,
    label: str,
) -> Execution:
    """How a version's requests run: through a :class:`Batcher` when its manifest configures
    batching, else one runtime call each (bounded by ``max_queue_size`` waiting requests)."""
    if batching is None:
        return DirectExecution(predict, pool, max_queue_size, label)
    return Batcher(predict, pool, batching, label)
