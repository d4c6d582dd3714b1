"""Redis Streams as a :class:`~pitstop.stream.broker.Broker` (the only module importing redis).

The group is a Redis consumer group on the source stream (created at the stream's start,
``XGROUP CREATE … 0 MKSTREAM``, when missing); each process reads as its own consumer
(``host-pid``) with ``XREADGROUP``. Entries a dead or stuck consumer holds longer than
``ack_wait`` are taken over with ``XAUTOCLAIM`` by whichever consumer looks next (their delivery
count goes up), so nothing stays pending forever.

A message is the entry's ``data`` field (its other fields are headers, carried to the answer);
an entry without ``data`` is a flat record of its fields. Answers and dead letters are entries of
the destination streams with ``data`` and the ``pitstop-*`` fields. Each is added by one Lua
script that adds the answer and acknowledges the message together, and only while the message is
still pending: the answer is never lost behind an acknowledgement, and a message two consumers
both answered (one of them past ``ack_wait``) gets one answer. Redis keeps them as durably as its
own persistence settings say (``appendonly``, replicas); pitstop cannot add to that. The three
keys must live on one Redis server (not across cluster slots).
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, cast

import orjson
from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from pitstop.stream.address import Endpoints
from pitstop.stream.broker import BrokerError, Delivery, Lag, Publication

log = logging.getLogger(__name__)

DATA = "data"
TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 15.0
IDLE_CONSUMER_S = 3600.0
"""Consumers of the group with nothing pending and idle this long are removed at start."""

# KEYS: source, answers, dead letters. ARGV: group, then per publication: id, dead (0/1),
# number of field/value pairs, the pairs. Adds and acknowledges only what is still pending.
COMPLETE = """
local group = ARGV[1]
local at = 2
local added = 0
while at <= #ARGV do
  local id = ARGV[at]
  local dest = KEYS[2]
  if ARGV[at + 1] == '1' then dest = KEYS[3] end
  local n = tonumber(ARGV[at + 2])
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if #pending == 1 then
    local fields = {}
    for i = 1, 2 * n do fields[i] = ARGV[at + 2 + i] end
    redis.call('XADD', dest, '*', unpack(fields))
    redis.call('XACK', KEYS[1], group, id)
    added = added + 1
  end
  at = at + 3 + 2 * n
end
return added
"""


class RedisBroker:
    def __init__(self, endpoints: Endpoints, group: str, *, ack_wait_s: float) -> None:
        self._endpoints = endpoints
        self._group = group
        self._ack_wait_ms = max(1, int(ack_wait_s * 1000))
        self._me = f"{socket.gethostname()}-{os.getpid()}"
        self._redis: aioredis.Redis | None = None
        self._complete: Any = None
        self._cursor = "0-0"
        self._next_claim = 0.0
        self._claim_every_s = min(max(ack_wait_s / 4, 0.1), 5.0)
        self._due: list[tuple[float, str, int]] = []
        """Messages given back with a delay: (when, id, delay in ms), taken again by this
        consumer unless another took them over meanwhile."""

    async def open(self) -> None:
        source = self._endpoints.source
        # Longer than any BLOCK (fetch waits at most a second): a half-open connection fails
        # a call instead of hanging it.
        client = self._redis = aioredis.Redis.from_url(
            source.server,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            socket_keepalive=True,
        )
        try:
            await client.ping()
            try:
                await client.xgroup_create(source.name, self._group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            await self._forget_idle_consumers(client)
            for field, key in (
                ("to", self._endpoints.to),
                ("dead_letter", self._endpoints.dead_letter),
            ):
                kind = _text(await client.type(key.name))
                if kind not in ("stream", "none"):
                    raise BrokerError(f"{field}: the key {key.name!r} holds a {kind}, not a stream")
        except RedisError as exc:
            raise BrokerError(f"Redis at {source}: {exc!r}") from None
        self._complete = client.register_script(COMPLETE)

    async def _forget_idle_consumers(self, client: aioredis.Redis) -> None:
        source = self._endpoints.source.name
        for consumer in await client.xinfo_consumers(source, self._group):
            idle_ms = int(consumer.get("idle", 0))
            if int(consumer.get("pending", 0)) == 0 and idle_ms > IDLE_CONSUMER_S * 1000:
                await client.xgroup_delconsumer(source, self._group, consumer["name"])

    async def fetch(self, count: int, wait_s: float) -> list[Delivery]:
        client = self._client()
        source = self._endpoints.source.name
        found: list[Delivery] = []
        try:
            found += await self._due_again(client, count)
            now = time.monotonic()
            if len(found) < count and now >= self._next_claim:
                self._next_claim = now + self._claim_every_s
                found += await self._reclaim(client, count - len(found))
            if len(found) < count:
                block = None if found else max(1, int(wait_s * 1000))
                answer = await client.xreadgroup(
                    self._group, self._me, {source: ">"}, count=count - len(found), block=block
                )
                for _stream, entries in cast(list[Any], answer or []):
                    found += [_delivery(i, fields, 1) for i, fields in entries if fields]
        except RedisError as exc:
            if found:  # claimed already: theirs to answer, not to wait out ack_wait
                log.warning("Redis fetch: %r", exc)
                return found
            raise BrokerError(f"Redis fetch: {exc!r}") from None
        return found

    async def _due_again(self, client: aioredis.Redis, count: int) -> list[Delivery]:
        """Messages this consumer gave back whose delay has passed, claimed again (their
        delivery count goes up)."""
        now = time.monotonic()
        due: list[tuple[float, str, int]] = []
        while self._due and self._due[0][0] <= now and len(due) < count:
            due.append(heapq.heappop(self._due))
        if not due:
            return []
        source = self._endpoints.source.name
        # Idle at least as long as the delay: an entry another consumer took over (XAUTOCLAIM
        # after ack_wait resets its idle time) or answered is not claimed a second time.
        idle_ms = min(delay for _when, _id, delay in due)
        ids: list[int | bytes | str | memoryview[int]] = [key for _when, key, _delay in due]
        entries = await client.xclaim(source, self._group, self._me, idle_ms, ids)
        return await self._counted(client, entries)

    async def _reclaim(self, client: aioredis.Redis, count: int) -> list[Delivery]:
        """Entries any consumer has held longer than ack_wait, now this one's."""
        source = self._endpoints.source.name
        cursor, entries, deleted = await client.xautoclaim(
            source, self._group, self._me, self._ack_wait_ms, self._cursor, count=count
        )
        self._cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if deleted:
            log.warning("%d pending entries of %s were deleted before they were answered "
                        "(trimmed from the stream)", len(deleted), source)  # fmt: skip
        return await self._counted(client, entries)

    async def _counted(self, client: aioredis.Redis, entries: list[Any]) -> list[Delivery]:
        entries = [(i, fields) for i, fields in entries if fields]
        if not entries:
            return []
        source = self._endpoints.source.name
        pipe = client.pipeline(transaction=False)
        for entry_id, _fields in entries:  # one exact range per entry: others' can't crowd it
            pipe.xpending_range(source, self._group, entry_id, entry_id, 1)
        counts: dict[str, int] = {}
        for pending in await pipe.execute():
            for p in pending:
                counts[_text(cast(bytes, p["message_id"]))] = int(p["times_delivered"])
        return [_delivery(i, fields, counts.get(_text(i), 2)) for i, fields in entries]

    async def complete(self, publications: Sequence[Publication]) -> list[Delivery]:
        if not publications:
            return []
        endpoints = self._endpoints
        keys = [endpoints.source.name, endpoints.to.name, endpoints.dead_letter.name]
        args: list[str | bytes] = [self._group]
        for item in publications:
            fields: list[str | bytes] = [DATA, item.body]
            for name, value in item.headers.items():
                fields += [name, value]
            count = str(len(fields) // 2)
            args += [item.delivery.id, "1" if item.dead else "0", count, *fields]
        try:
            added = int(await self._complete(keys=keys, args=args))
            if added < len(publications):
                log.info("%d of %d messages were answered by another consumer already (held "
                         "past ack_wait): not answered twice", len(publications) - added,
                         len(publications))  # fmt: skip
        except RedisError as exc:
            log.warning("publishing %d answers failed: %r", len(publications), exc)
            return [item.delivery for item in publications]
        return []

    async def retry(self, deliveries: Sequence[Delivery], delay_s: float) -> None:
        due = time.monotonic() + delay_s
        delay_ms = max(0, int(delay_s * 1000) - 50)  # idle since its delivery: at least this
        for delivery in deliveries:
            heapq.heappush(self._due, (due, delivery.id, delay_ms))

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        source = self._endpoints.source.name
        try:
            await self._client().xclaim(
                source, self._group, self._me, 0, [d.id for d in deliveries], justid=True
            )
        except RedisError as exc:
            log.warning("Redis XCLAIM (extend) failed: %r", exc)

    async def lag(self) -> Lag:
        source = self._endpoints.source.name
        try:
            groups = await self._client().xinfo_groups(source)
        except RedisError as exc:
            raise BrokerError(f"Redis XINFO GROUPS: {exc!r}") from None
        for group in groups:
            if _text(cast(bytes, group["name"])) == self._group:
                return Lag(int(group.get("lag") or 0), int(group.get("pending") or 0))
        raise BrokerError(f"the group {self._group!r} of {source!r} is gone")

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    def _client(self) -> aioredis.Redis:
        assert self._redis is not None, "open() first"
        return self._redis


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _delivery(entry_id: bytes | str, fields: dict[bytes, bytes], deliveries: int) -> Delivery:
    key = _text(entry_id)
    data = fields.get(DATA.encode())
    headers = {_text(k): _text(v) for k, v in fields.items() if k != DATA.encode()}
    if data is None:  # a flat record of fields
        data, headers = orjson.dumps(headers), {}
    return Delivery(key, data, headers, deliveries, _order(key)[0] * 1_000_000, None)
