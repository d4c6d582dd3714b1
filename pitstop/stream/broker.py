"""What a stream consumer needs from a message broker: the adapter seam.

A :class:`Broker` is one durable consumer (NATS JetStream) or consumer group (Redis Streams) on
one source, plus the two destinations it answers to. Adapters: :mod:`.nats_broker`,
:mod:`.redis_broker`. RabbitMQ (quorum queues, publisher confirms) or Kafka (consumer groups,
transactional producer) would fit the same five calls; none is written until its broker can run
in our tests.

The delivery contract every adapter keeps, which the consumer's guarantees rest on:

- a message fetched and never completed, retried or extended is delivered again (to any
  consumer of the group) once ``ack_wait`` has passed since its delivery: a crashed consumer
  loses nothing;
- :meth:`Broker.complete` acknowledges a message only after its publication is durably stored
  by the broker (a JetStream publish acknowledgement; a Redis transaction that also holds the
  acknowledgement), so an answer is never lost behind an acknowledgement;
- every publication carries its message's id, stable across deliveries, so a consumer of the
  answers can drop duplicates (and the adapters drop those they can see themselves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class BrokerError(Exception):
    """The broker could not be reached or refused a call; what was not completed is delivered
    again later. The message says what and where."""


@dataclass(frozen=True)
class Delivery:
    """One delivery of one message."""

    id: str
    """Stable across deliveries (the producer's ``Nats-Msg-Id``, else ``STREAM:SEQUENCE``; the
    Redis entry id): the idempotency key of the answer."""
    body: bytes
    headers: Mapping[str, str]
    deliveries: int
    """1 on the first delivery."""
    published_ns: int
    """When the broker stored the message (wall clock, ns); 0 when it does not say."""
    handle: object = field(compare=False, repr=False)
    """The adapter's own reference to the delivery."""


@dataclass(frozen=True)
class Publication:
    """An answer (or a dead letter) for one delivery."""

    delivery: Delivery
    body: bytes
    headers: Mapping[str, str]
    dead: bool = False
    """To the dead-letter destination instead of the answers."""


@dataclass(frozen=True)
class Lag:
    pending: int
    """Messages in the source no consumer of the group has received yet."""
    unacked: int
    """Messages delivered and not acknowledged yet (in flight, or held by a dead consumer)."""


class Broker(Protocol):
    """One source consumed by a group, and its two destinations. Calls are made from one event
    loop; :meth:`fetch` is never called concurrently with itself."""

    async def open(self) -> None:
        """Connect; create the group's durable consumer when missing; check that the
        destinations accept messages. Raises BrokerError saying what is missing."""
        ...

    async def fetch(self, count: int, wait_s: float) -> list[Delivery]:
        """Up to ``count`` deliveries, new ones and those due again; waits at most ``wait_s``
        for the first, and returns [] when none came."""
        ...

    async def complete(self, publications: Sequence[Publication]) -> list[Delivery]:
        """Publish each durably, then acknowledge its delivery. Returns the deliveries whose
        publication failed: those stay unacknowledged (delivered again later)."""
        ...

    async def retry(self, deliveries: Sequence[Delivery], delay_s: float) -> None:
        """Give these back to be delivered again, not before ``delay_s`` where the broker can
        delay (JetStream); Redis delivers them again after ``ack_wait``."""
        ...

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Still working on these: restart their ``ack_wait``."""
        ...

    async def lag(self) -> Lag:
        """The group's lag now (one broker call)."""
        ...

    async def close(self) -> None:
        """Disconnect (deliveries not completed are delivered again later)."""
        ...


ANSWER_HEADERS = ("Pitstop-Message-Id", "Pitstop-Model", "Pitstop-Model-Version")
"""Headers (NATS) or fields (Redis) every answer carries, with ``Pitstop-Model-Digest``."""


MAX_CARRIED = 64
"""Headers of a message carried to its answer, at most."""
MAX_CARRIED_CHARS = 4096
"""Longest header value carried (longer ones are left out)."""
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")


def carried(headers: Mapping[str, str]) -> dict[str, str]:
    """The message's headers that go on with its answer: not the broker's own (``Nats-*``) nor
    the ones pitstop sets; only names that are HTTP tokens and one-line values (what every
    broker client publishes), at most :data:`MAX_CARRIED` of them."""
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if len(kept) >= MAX_CARRIED:
            break
        if name.lower().startswith(("nats-", "pitstop-")) or not _TOKEN.fullmatch(name):
            continue
        if len(value) > MAX_CARRIED_CHARS or "\r" in value or "\n" in value:
            continue
        kept[name] = value
    return kept
