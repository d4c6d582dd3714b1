"""NATS JetStream as a :class:`~pitstop.stream.broker.Broker` (the only module importing nats).

The source subject must be stored by a JetStream stream; the group is a durable **pull**
consumer on it (explicit ack, ``ack_wait``; every consumer process binds the same durable, and
JetStream hands each message to one of them). JetStream's own ``max_deliver`` is left unlimited:
pitstop counts deliveries itself and dead-letters a message past its limit, so a message that
kills its consumer every time still ends in the dead letters instead of being dropped silently
by the server.

Answers and dead letters are JetStream publishes (each awaits its publish acknowledgement, the
stream's storage of it) with ``Nats-Msg-Id`` set to ``<message id>:answer`` (or ``:dead``): the
destination stream
drops a second answer to the same message within its duplicate window (2 minutes by default),
so a redelivery after a crash publishes nothing new. Only then is the message acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from pitstop.stream.address import Endpoints
from pitstop.stream.broker import BrokerError, Delivery, Lag, Publication

log = logging.getLogger(__name__)

API_TIMEOUT_S = 5.0
"""JetStream API calls and publish acknowledgements."""
MSG_ID = "Nats-Msg-Id"
PENDING_LIMIT = 65_536
"""Messages the client library may buffer for one subscription."""


class NatsBroker:
    def __init__(self, endpoints: Endpoints, group: str, *, ack_wait_s: float) -> None:
        self._endpoints = endpoints
        self._group = group
        self._ack_wait_s = ack_wait_s
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stream = ""

    async def open(self) -> None:
        source, to, dead = self._endpoints.source, self._endpoints.to, self._endpoints.dead_letter
        try:
            client = await nats.connect(
                servers=[source.server],
                name=f"pitstop-{self._group}",
                connect_timeout=API_TIMEOUT_S,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=_log_error,
            )
        except (OSError, nats.errors.Error) as exc:
            raise BrokerError(f"cannot connect to NATS at {source}: {exc!r}") from None
        self._client = client
        js = self._js = client.jetstream(timeout=API_TIMEOUT_S)
        self._stream = await self._stream_of(js, source.name, "from")
        for field, address in (("to", to), ("dead_letter", dead)):
            await self._stream_of(js, address.name, field)
        try:
            info = await js.consumer_info(self._stream, self._group)
            held = info.config.filter_subject
            if held and held != source.name:
                raise BrokerError(
                    f"the durable consumer {self._group!r} on stream {self._stream!r} takes "
                    f"{held!r}, not {source.name!r}: choose another group"
                )
        except nats.js.errors.NotFoundError:
            config = ConsumerConfig(
                durable_name=self._group,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self._ack_wait_s,
                max_deliver=-1,
                filter_subject=source.name,
                deliver_policy=DeliverPolicy.ALL,
                max_ack_pending=-1,
            )
            with contextlib.suppress(nats.js.errors.BadRequestError):  # created meanwhile
                await js.add_consumer(self._stream, config)
        except nats.errors.Error as exc:
            raise BrokerError(f"NATS: {exc!r}") from None
        self._sub = await js.pull_subscribe_bind(
            durable=self._group, stream=self._stream, pending_msgs_limit=PENDING_LIMIT
        )

    @staticmethod
    async def _stream_of(js: JetStreamContext, subject: str, field: str) -> str:
        try:
            return await js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            raise BrokerError(
                f"{field}: no JetStream stream stores {subject!r}; create one "
                f"(nats stream add --subjects {subject!r} ...) so messages are kept"
            ) from None
        except nats.errors.Error as exc:
            raise BrokerError(f"NATS: {exc!r}") from None

    async def fetch(self, count: int, wait_s: float) -> list[Delivery]:
        assert self._sub is not None, "open() first"
        try:
            messages = await self._sub.fetch(batch=count, timeout=max(wait_s, 0.002))
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.errors.Error as exc:
            raise BrokerError(f"NATS fetch: {exc!r}") from None
        return [_delivery(msg) for msg in messages]

    async def complete(self, publications: Sequence[Publication]) -> list[Delivery]:
        js = self._js
        assert js is not None, "open() first"
        to, dead = self._endpoints.to.name, self._endpoints.dead_letter.name

        async def publish(item: Publication) -> None:
            headers = dict(item.headers)
            key = item.delivery.id
            # Not the message's own id: the answers may live in the source's stream, whose
            # duplicate window holds that id already (the answer would be dropped).
            headers[MSG_ID] = f"{key}:dead" if item.dead else f"{key}:answer"
            await js.publish(
                dead if item.dead else to, item.body, timeout=API_TIMEOUT_S, headers=headers
            )

        results = await asyncio.gather(
            *(publish(item) for item in publications), return_exceptions=True
        )
        failed: list[Delivery] = []
        for item, result in zip(publications, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning("publishing the answer to %s failed: %r", item.delivery.id, result)
                failed.append(item.delivery)
                continue
            await _settle(item.delivery, "ack")
        return failed

    async def retry(self, deliveries: Sequence[Delivery], delay_s: float) -> None:
        for delivery in deliveries:
            await _settle(delivery, "nak", delay_s)

    async def extend(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await _settle(delivery, "in_progress")

    async def lag(self) -> Lag:
        js = self._js
        assert js is not None, "open() first"
        try:
            info = await js.consumer_info(self._stream, self._group)
        except nats.errors.Error as exc:
            raise BrokerError(f"NATS consumer info: {exc!r}") from None
        return Lag(int(info.num_pending or 0), int(info.num_ack_pending or 0))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await client.flush(timeout=int(API_TIMEOUT_S))  # the last acknowledgements
        with contextlib.suppress(nats.errors.Error):
            await client.close()


def _delivery(msg: Msg) -> Delivery:
    meta = msg.metadata
    headers = msg.headers or {}
    key = headers.get(MSG_ID) or f"{meta.stream}:{meta.sequence.stream}"
    published = int(meta.timestamp.timestamp() * 1e9) if meta.timestamp else 0
    return Delivery(key, msg.data, headers, int(meta.num_delivered), published, msg)


async def _settle(delivery: Delivery, how: str, *args: Any) -> None:
    """ack / nak / in_progress on the delivery's message; a message already settled or a
    connection lost is logged (JetStream delivers it again if it must)."""
    msg = delivery.handle
    assert isinstance(msg, Msg)
    try:
        await getattr(msg, how)(*args)
    except nats.errors.Error as exc:
        log.warning("NATS %s of %s failed: %r", how, delivery.id, exc)


async def _log_error(exc: Exception) -> None:
    log.warning("NATS: %r", exc)
