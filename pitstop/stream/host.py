"""The stream consumers of one process, hosted over a started Engine's DataPlane.

``pitstop stream`` runs one; ``pitstop serve`` runs those of ``PITSTOP_STREAMS`` beside HTTP and
gRPC. Either way::

    async with StreamHost(engine.dataplane, engine.observability.streams, specs):
        ...   # consuming; begin_drain() (SIGTERM) stops the fetching
    # on exit: every batch in flight answered and acknowledged, brokers closed

Starting checks what can be checked before the first message: the addresses (InvalidInput
naming the field), the model (ModelNotFound), the broker, its streams and the group
(BrokerError saying what is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from types import TracebackType

from pitstop.errors import Unavailable
from pitstop.monitoring.streams import StreamRecorder
from pitstop.serving.dataplane import DataPlane
from pitstop.settings import StreamSettings
from pitstop.stream.address import Endpoints, endpoints
from pitstop.stream.broker import Broker, BrokerError
from pitstop.stream.consumer import Consumer

log = logging.getLogger(__name__)

RESTART_S = 1.0
"""Pause before a consumer that failed unexpectedly runs again."""


def group_of(model: str) -> str:
    """The default group of a model's stream: a valid NATS durable name and Redis group."""
    return "pitstop-" + re.sub(r"[^A-Za-z0-9_-]", "-", model)


def broker_for(ends: Endpoints, spec: StreamSettings) -> Broker:
    """The adapter of the source's broker (its client library is imported here, when used)."""
    group = spec.group or group_of(spec.model)
    if ends.source.broker == "nats":
        from pitstop.stream.nats_broker import NatsBroker

        return NatsBroker(ends, group, ack_wait_s=spec.ack_wait_s)
    from pitstop.stream.redis_broker import RedisBroker

    return RedisBroker(ends, group, ack_wait_s=spec.ack_wait_s)


class StreamHost:
    def __init__(
        self,
        dataplane: DataPlane,
        recorder: StreamRecorder,
        specs: Sequence[StreamSettings],
        drain_timeout_s: float = 30.0,
    ) -> None:
        """``drain_timeout_s`` bounds :meth:`close`: batches still in flight then are given back
        to the broker (delivered again) rather than waited for."""
        self._drain_timeout_s = drain_timeout_s
        self.drained = True
        """False when :meth:`close` gave batches back instead of finishing them."""
        self._dataplane = dataplane
        self._recorder = recorder
        self._specs = tuple(specs)
        self._brokers: list[Broker] = []
        self.consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Check every stream and open its broker, then start consuming. Raises InvalidInput
        (an address), ModelNotFound, or Unavailable saying what the broker lacks."""
        ends = [endpoints(spec.source, spec.to, spec.dead_letter) for spec in self._specs]
        for spec in self._specs:
            self._dataplane.require_model(spec.model)
        try:
            for spec, where in zip(self._specs, ends, strict=True):
                broker = broker_for(where, spec)
                self._brokers.append(broker)
                try:
                    await broker.open()
                except BrokerError as exc:
                    raise Unavailable(str(exc)) from None
                series = self._recorder.series(str(where.source), spec.model)
                self.consumers.append(Consumer(spec, self._dataplane, broker, series))
                log.info(
                    "consuming %s for %s: answers to %s, dead letters to %s",
                    where.source, spec.model, where.to.name, where.dead_letter.name,
                )  # fmt: skip
        except BaseException:
            await self._close_brokers()
            raise
        self._tasks = [
            asyncio.create_task(self._keep_running(c), name=f"stream-{c_spec.model}")
            for c, c_spec in zip(self.consumers, self._specs, strict=True)
        ]

    async def _keep_running(self, consumer: Consumer) -> None:
        while True:
            try:
                await consumer.run()
            except Exception:
                log.exception("a stream consumer failed; it starts again")
            if consumer.stopping or self._dataplane.draining:
                return
            await asyncio.sleep(RESTART_S)

    def stop(self) -> None:
        """Stop fetching (what is in flight goes on)."""
        for consumer in self.consumers:
            consumer.stop()

    async def wait(self) -> None:
        """Until every consumer has returned (after :meth:`stop` or a drain)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop, settle what is in flight (up to the drain timeout), disconnect."""
        self.stop()
        try:
            await asyncio.wait_for(self.wait(), self._drain_timeout_s)
        except TimeoutError:
            self.drained = False
            log.error("stream batches still in flight after %.0f s: given back to the broker",
                      self._drain_timeout_s)  # fmt: skip
        await self._close_brokers()

    async def _close_brokers(self) -> None:
        for broker in self._brokers:
            with contextlib.suppress(Exception):
                await broker.close()
        self._brokers = []

    async def __aenter__(self) -> StreamHost:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
