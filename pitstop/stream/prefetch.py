"""Deliveries fetched ahead of the batches that score them: one task fills a bounded buffer.

Fetching ahead keeps the broker's round trip off the batch's path (a batch waits ``max_wait``
on the event loop's clock, not on broker fetch timeouts, which overshoot by milliseconds), and
lets ``batch_size=1`` keep ``in_flight`` calls busy from one fetch. The buffer holds at most
``size`` deliveries: once it is full (every in-flight batch busy, a slow or held model),
nothing more is fetched and messages stay in the broker. What sits in a full buffer has its
``ack_wait`` extended, so it is not delivered to another consumer meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from pitstop.stream.broker import Broker, BrokerError, Delivery

log = logging.getLogger(__name__)

IDLE_FETCH_S = 0.5
"""Longest one fetch waits when nothing comes (how soon a stop is noticed while idle)."""
RETRY_S = 1.0
"""Pause after a failed fetch."""
IDLE_CHECK_S = 0.1
"""While waiting for a first delivery, how often the end of fetching is looked for."""


class Prefetch:
    def __init__(
        self,
        broker: Broker,
        size: int,
        *,
        stopping: Callable[[], bool],
        ack_wait_s: float,
    ) -> None:
        self._broker = broker
        self._size = size
        self._stopping = stopping
        self._extend_every_s = ack_wait_s / 3
        self._items: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._fill(), name="stream-fetch")

    def wake(self) -> None:
        """Something changed that may let the fetcher fetch or stop (room, a stop)."""
        self._room.set()

    @property
    def fetching(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        extended = loop.time()
        while not self._stopping():
            if len(self._items) >= self._size:
                if self._items and loop.time() - extended > self._extend_every_s:
                    extended = loop.time()
                    await self._extend()
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), IDLE_FETCH_S)
                continue
            extended = loop.time()
            try:
                fetched = await self._broker.fetch(self._size - len(self._items), IDLE_FETCH_S)
            except Exception as exc:  # the broker, or a defect: fetch again, never stop here
                if isinstance(exc, BrokerError):
                    log.warning("%s", exc)
                else:
                    log.exception("fetching failed")
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), RETRY_S)
                continue
            if fetched:
                self._items.extend(fetched)
                self._arrived.set()

    async def _extend(self) -> None:
        try:
            await self._broker.extend(list(self._items))
        except Exception:
            log.exception("extending fetched deliveries failed")

    async def next_batch(self, size: int, max_wait_s: float) -> list[Delivery]:
        """The first delivery to come, then what comes within ``max_wait_s``, up to ``size``.
        [] once fetching has ended and nothing is left."""
        while not self._items:
            if not self.fetching:
                return []
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), IDLE_CHECK_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        batch = [self._items.popleft()]
        while len(batch) < size:
            if self._items:
                batch.append(self._items.popleft())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.fetching:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        self._room.set()
        return batch

    async def close(self) -> list[Delivery]:
        """End fetching (cancelled if it still runs) and hand back what was never batched."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        left = list(self._items)
        self._items.clear()
        return left
