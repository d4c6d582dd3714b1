"""NATS JetStream as a :class:`~pitstop.stream.broker.Broker` (the only module importing nats).

The source subject must be stored by a JetStream stream; the group is a durable **pull**
consumer on it (explicit ack, ``ack_wait``; every consumer process binds the same durable, and
JetStream hands each message to one of them). JetStream's own ``max_deliver`` is left unlimited:
pitstop counts deliveries itself and dead-letters a message past its limit, so a message that
kills its consumer every time still ends in the dead letters instead of being dropped silently
by the server.

Answers and dead letters are JetStream publishes (each awaits its publish acknowledgement, the
stream's storage of it) with ``Nats-Msg-Id`` set to ``<STREAM>:<sequence>:answer`` (or
``:dead``) of the stored message: the destination stream
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
CONNECT_ATTEMPTS = 3
"""Tries to reach the server at start, before it is an error."""
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
        self._max_payload = 1024 * 1024

    async def open(self) -> None:
        source, to, dead = self._endpoints.source, self._endpoints.to, self._endpoints.dead_letter
        try:  # a few tries at start (an unreachable server is an error, not a hang) ...
            client = await asyncio.wait_for(
                nats.connect(
                    servers=[source.server],
                    name=f"pitstop-{self._group}",
                    connect_timeout=API_TIMEOUT_S / 2,
                    max_reconnect_attempts=CONNECT_ATTEMPTS,
                    reconnect_time_wait=0.5,
                    allow_reconnect=True,
                    error_cb=_log_error,
                ),
                CONNECT_ATTEMPTS * API_TIMEOUT_S,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise BrokerError(f"cannot connect to NATS at {source}: {exc!r}") from None
        # ... and once connected, reconnect for as long as it takes (the client reads this
        # option at each reconnection).
        client.options["max_reconnect_attempts"] = -1
        self._client = client
        js = self._js = client.jetstream(timeout=API_TIMEOUT_S)
        self._stream = await self._stream_of(js, source.name, "from")
        for field, address in (("to", to), ("dead_letter", dead)):
            await self._stream_of(js, address.name, field)
        try:
            info = await js.consumer_info(self._stream, self._group)
            _check_consumer(info.config, self._group, source.name, self._ack_wait_s)
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
            try:
                await js.add_consumer(self._stream, config)
            except nats.js.errors.BadRequestError:  # another consumer process created it
                info = await js.consumer_info(self._stream, self._group)
                _check_consumer(info.config, self._group, source.name, self._ack_wait_s)
        except (nats.errors.Error, ValueError) as exc:
            raise BrokerError(f"NATS consumer {self._group!r}: {exc!r}") from None
        self._sub = await js.pull_subscribe_bind(
            durable=self._group, stream=self._stream, pending_msgs_limit=PENDING_LIMIT
        )
        self._max_payload = client.max_payload

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
        results = await asyncio.gather(
            *(self._publish(item) for item in publications), return_exceptions=True
        )
        failed: list[Delivery] = []
        for item, result in zip(publications, results, strict=True):
            if isinstance(result, Terminated):
                continue  # settled, by giving up on it
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                log.warning("publishing the answer to %s failed: %r", item.delivery.id, result)
                failed.append(item.delivery)
                continue
            await _settle(item.delivery, "ack")
        return failed

    async def _publish(self, item: Publication) -> None:
        """Publish durably. An answer the server would never take (too large, a header nats-py
        refuses) becomes a dead letter saying so, its payload cut to fit when it must:
        retrying it would fail forever."""
        try:
            await self._send(item)
        except Exception as exc:
            if not _permanent(exc):
                raise
            log.error("the answer to %s cannot be published (%s): dead-lettered", item.delivery.id,
                      exc)  # fmt: skip
            fallback = self._unpublishable(item, str(exc))
            try:
                await self._send(fallback)
            except Exception as again:
                if not _permanent(again):
                    raise
                # Not even a cut-down dead letter is taken: stop its redeliveries, loudly.
                log.error("message %s can be neither answered nor dead-lettered (%s): "
                          "terminated; its payload: %r", item.delivery.id, again,
                          item.delivery.body[:200])  # fmt: skip
                await _settle(item.delivery, "term")
                raise Terminated from None

    async def _send(self, item: Publication) -> None:
        js = self._js
        assert js is not None, "open() first"
        headers = dict(item.headers)
        msg = item.delivery.handle
        assert isinstance(msg, Msg)
        # The stored message's identity, not the producer's id (which it may reuse, and whose
        # duplicate window may hold it already when the answers live in the source's stream).
        meta = msg.metadata
        stored = f"{meta.stream}:{meta.sequence.stream}"
        headers[MSG_ID] = f"{stored}:dead" if item.dead else f"{stored}:answer"
        size = len(item.body) + sum(len(k.encode()) + len(v.encode()) + 4
                                    for k, v in headers.items()) + 16  # fmt: skip
        if size > self._max_payload:
            raise Unpublishable(f"{size} bytes, more than the server's max_payload "
                                f"({self._max_payload})")  # fmt: skip
        subject = self._endpoints.dead_letter.name if item.dead else self._endpoints.to.name
        ack = await js.publish(subject, item.body, timeout=API_TIMEOUT_S, headers=headers)
        if ack.duplicate:
            log.debug("%s was answered before (a redelivery): the answer is kept once", stored)

    def _unpublishable(self, item: Publication, reason: str) -> Publication:
        headers = {k: v for k, v in item.headers.items() if k.startswith("Pitstop-") and
                   k not in ("Pitstop-Error", "Pitstop-Error-Kind")}  # fmt: skip
        headers["Pitstop-Error"] = f"its answer could not be published: {reason}"[:1024]
        headers["Pitstop-Error-Kind"] = "unpublishable"
        body = item.delivery.body
        room = self._max_payload - 4096
        if len(body) > room:
            headers["Pitstop-Payload-Truncated"] = str(len(body))
            body = body[:room]
        return Publication(item.delivery, body, headers, dead=True)

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


class Unpublishable(Exception):
    """An answer the server would refuse every time."""


class Terminated(Exception):
    """A message given up (``term``): it must not be acknowledged or given back."""


STREAM_MESSAGE_TOO_LARGE = 10054
"""JetStream's error code for a message over the stream's ``max_msg_size``."""


def _permanent(exc: BaseException) -> bool:
    """Whether the server would refuse this publication every time."""
    if isinstance(exc, Unpublishable | nats.errors.BadHeaderError | nats.errors.MaxPayloadError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == STREAM_MESSAGE_TOO_LARGE


def _check_consumer(config: ConsumerConfig, group: str, subject: str, ack_wait_s: float) -> None:
    """Refuse a durable consumer whose settings would break the delivery contract."""
    problems = []
    taken = [config.filter_subject] if config.filter_subject else list(config.filter_subjects or [])
    if taken != [subject]:
        problems.append(f"takes {taken or 'every subject of its stream'}, not [{subject!r}]")
    if config.ack_wait is not None and abs(config.ack_wait - ack_wait_s) > 0.001:
        problems.append(f"has ack_wait {config.ack_wait:g} s, not --ack-wait {ack_wait_s:g}")
    if config.backoff:
        problems.append("has a redelivery backoff list (it overrides ack_wait)")
    if config.ack_policy not in (None, AckPolicy.EXPLICIT):
        problems.append(f"acknowledges {config.ack_policy}, not explicitly (one ack would "
                        "settle messages not answered yet)")  # fmt: skip
    if config.max_deliver not in (None, -1, 0):
        problems.append(f"has max_deliver {config.max_deliver} (JetStream would drop messages "
                        "silently; pitstop counts deliveries itself)")  # fmt: skip
    if config.deliver_subject:
        problems.append("is a push consumer")
    if problems:
        raise BrokerError(f"the durable consumer {group!r} {'; '.join(problems)}: delete it "
                          "or choose another group")  # fmt: skip


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
