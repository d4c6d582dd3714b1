"""A broker at the consumer's seam: deliveries in memory, what the consumer did recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import orjson

from pitstop.stream.broker import BrokerError, Delivery, Lag, Publication


def delivery(key: str, body: object, headers: Mapping[str, str] | None = None) -> Delivery:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Delivery(key, data, dict(headers or {}), 1, 0, None)


@dataclass
class FakeBroker:
    """``waiting`` are delivered by :meth:`fetch` in order; :meth:`retry` puts a delivery back
    with its count one higher (``delays`` records the delay asked for)."""

    waiting: list[Delivery] = field(default_factory=list)
    answers: list[Publication] = field(default_factory=list)
    dead: list[Publication] = field(default_factory=list)
    delays: list[tuple[str, float]] = field(default_factory=list)
    extended: int = 0
    fail_publish: set[str] = field(default_factory=set)
    """Ids whose publication fails (once each)."""
    fetches: int = 0
    unacked: int = 0
    broken_fetches: int = 0
    """Fetches that raise a plain exception (a defect, not a BrokerError) before working."""

    def add(self, *items: Delivery) -> None:
        self.waiting.extend(items)

    async def open(self) -> None:
        pass

    async def fetch(self, count: int, wait_s: float) -> list[Delivery]:
        self.fetches += 1
        if self.broken_fetches:
            self.broken_fetches -= 1
            raise RuntimeError("a fetch that breaks")
        if not self.waiting:
            await asyncio.sleep(min(wait_s, 0.01))
            return []
        taken, self.waiting = self.waiting[:count], self.waiting[count:]
        self.unacked += len(taken)
        return taken

    async def complete(self, publications: Sequence[Publication]) -> list[Delivery]:
        failed = []
        for item in publications:
            if item.delivery.id in self.fail_publish:
                self.fail_publish.discard(item.delivery.id)
                failed.append(item.delivery)
                continue
            (self.dead if item.dead else self.answers).append(item)
            self.unacked -= 1
        return failed

    async def retry(self, deliveries: Sequence[Delivery], delay_s: float) -> None:
        for item in deliveries:
            self.delays.append((item.id, delay_s))
            self.unacked -= 1
            self.waiting.append(replace(item, deliveries=item.deliveries + 1))

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        self.extended += len(deliveries)

    async def lag(self) -> Lag:
        if self.fetches < 0:
            raise BrokerError("never")
        return Lag(len(self.waiting), self.unacked)

    async def close(self) -> None:
        pass

    def answer_of(self, key: str) -> dict[str, object]:
        (found,) = [orjson.loads(p.body) for p in self.answers if p.delivery.id == key]
        return found  # type: ignore[no-any-return]

    def dead_of(self, key: str) -> Publication:
        (found,) = [p for p in self.dead if p.delivery.id == key]
        return found
