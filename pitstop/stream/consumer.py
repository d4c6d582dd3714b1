"""One stream consumed: fetch a batch, score it through the DataPlane, answer, acknowledge.

::

    fetch ≤ batch_size deliveries (waiting ≤ max_wait_ms for the batch to fill)
      └ up to in_flight batches at once; fetching waits while all are busy (backpressure)
    each batch: parse every message (bad bytes: dead letter) → group compatible messages
      → one DataPlane.infer per group (the traffic policy, canaries and metrics as on HTTP)
      → a group that fails is split in halves until the failing messages stand alone
      → disposition of each message (answer, dead letter, retry, hold: disposition.py)
      → Broker.complete: answers and dead letters published durably, then acknowledged

The version a message is scored by is resolved at its model call, as for an HTTP request: an
alias that moves mid-stream serves the next batch; a batch in flight finishes on the version
it leased. :meth:`Consumer.stop` stops fetching; :meth:`Consumer.run` returns once every batch
in flight is answered and acknowledged (or given back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pitstop.errors import InternalError, InvalidInput, PitstopError
from pitstop.monitoring.streams import Outcome, StreamSeries
from pitstop.protocol.reference import parse_ref
from pitstop.protocol.tensor import InferRequest, TensorSpec
from pitstop.serving.dataplane import DataPlane, Served
from pitstop.settings import StreamSettings
from pitstop.stream import message as messages
from pitstop.stream.broker import Broker, BrokerError, Delivery, Publication
from pitstop.stream.disposition import Action, backoff, disposition, exhausted, holds
from pitstop.stream.message import Answerer, Message
from pitstop.stream.prefetch import Prefetch

log = logging.getLogger(__name__)

BROKER_RETRY_S = 1.0
"""Pause after the broker failed a fetch."""
HOLD_FIRST_S = 0.05
HOLD_MAX_S = 2.0
"""Waits between tries of a held batch (model loading, queues full)."""
MAX_METADATA = 32
"""Headers of a message passed to the DataPlane as request metadata (trace context, sticky
routing key)."""


@dataclass(frozen=True)
class Result:
    """How one message's model call ended."""

    message: Message
    outputs: dict[str, np.ndarray] | None = None
    served: Served | None = None
    error: BaseException | None = None


class Consumer:
    def __init__(
        self,
        spec: StreamSettings,
        dataplane: DataPlane,
        broker: Broker,
        series: StreamSeries,
    ) -> None:
        self._spec = spec
        self._dataplane = dataplane
        self._broker = broker
        self._series = series
        self._version = parse_ref(spec.version) if spec.version else None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: Callable[[], None] = lambda: None

    def stop(self) -> None:
        """Stop fetching; :meth:`run` returns once the batches in flight are settled."""
        self._stopping.set()
        self._wake()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Consume until :meth:`stop` (or the DataPlane drains), then finish what is in flight:
        what was fetched is scored, answered and acknowledged before this returns. Raises what
        fails unexpectedly (the host runs it again); cancelled, it gives back what it holds."""
        spec = self._spec
        lag = asyncio.create_task(self._watch_lag(), name="stream-lag")
        slots = asyncio.Semaphore(spec.in_flight)
        prefetch = Prefetch(
            self._broker,
            max(spec.batch_size, spec.in_flight),  # batching off: one fetch, many calls
            stopping=lambda: self.stopping or self._dataplane.draining,
            ack_wait_s=spec.ack_wait_s,
        )
        self._wake = prefetch.wake

        def done(_task: asyncio.Task[None]) -> None:
            slots.release()
            prefetch.wake()

        try:
            await self._until_servable()
            prefetch.start()
            while True:
                await slots.acquire()
                batch = await prefetch.next_batch(spec.batch_size, spec.max_wait_ms / 1000)
                if not batch:
                    slots.release()
                    break
                task = asyncio.create_task(self._handle(batch), name="stream-batch")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(done)
        except asyncio.CancelledError:  # the drain timed out: what is in flight goes back
            for task in self._tasks:
                task.cancel()
            raise
        finally:
            left = await prefetch.close()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if left:
                with contextlib.suppress(Exception):
                    await self._broker.retry(left, 0.0)
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag

    async def _until_servable(self) -> None:
        """Fetch nothing before the model can serve (it may still be loading): messages wait
        in the broker rather than held here. NotFound for a model the registry lacks."""
        said = False
        while not (self.stopping or self._dataplane.draining or self._servable()):
            if not said:
                said = True
                log.info("%s: waiting for the model to serve before fetching", self._spec.model)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), HOLD_FIRST_S)

    def _servable(self) -> bool:
        try:
            return self._dataplane.model_ready(self._spec.model, self._version)
        except PitstopError:  # an alias not set yet, a model not registered yet
            return False

    async def _handle(self, batch: list[Delivery]) -> None:
        """Score, answer and acknowledge one batch. Each group of messages is settled as soon as
        its call ends (one held group does not hold its neighbours' answers back); whatever is
        left unsettled when something unexpected fails is given back to the broker."""
        fetched = time.monotonic()
        spec, series = self._spec, self._series
        series.count(Outcome.CONSUMED, len(batch))
        series.count(Outcome.REDELIVERED, sum(1 for d in batch if d.deliveries > 1))
        series.batch.observe(len(batch))
        unsettled = {id(d): d for d in batch}
        try:
            dead: list[Publication] = []
            parsed: list[Message] = []
            for delivery in batch:
                if exhausted(delivery.deliveries, spec.max_deliver):
                    dead.append(self._dead(delivery, _undeliverable(delivery), "undeliverable"))
                    continue
                try:
                    parsed.append(messages.parse(delivery, spec.format, spec.max_message_bytes))
                except PitstopError as exc:
                    dead.append(self._dead(delivery, exc))
            if dead:
                await self._settle([], dead, fetched, unsettled)
            sticky = self._dataplane.sticky_header(spec.model)
            groups: dict[tuple[Any, ...], list[Message]] = defaultdict(list)
            for message in parsed:
                groups[messages.group_key(message, sticky)].append(message)
            ended = await asyncio.gather(
                *(self._score_and_settle(g, fetched, unsettled) for g in groups.values()),
                return_exceptions=True,
            )
            for outcome in ended:
                if isinstance(outcome, Exception):
                    log.error("a group of %s failed", spec.model, exc_info=outcome)
        except Exception:
            log.exception("a batch of %s failed; its unsettled messages go back", spec.model)
        finally:
            if unsettled:  # a defect, or cancelled: delivered again later, never lost
                with contextlib.suppress(Exception):
                    delay = backoff(1, spec.backoff_s, spec.backoff_max_s)
                    await self._broker.retry(list(unsettled.values()), delay)

    async def _score_and_settle(
        self, group: list[Message], fetched: float, unsettled: dict[int, Delivery]
    ) -> None:
        """Score the group and settle each message as soon as its result is final; messages
        the server cannot serve now are held (their ``ack_wait`` extended) and tried again
        until it can, or until the consumer stops."""
        wait = HOLD_FIRST_S
        extended = time.monotonic()
        while True:
            results = await self._score_safely(group)
            held = [] if self.stopping else [r for r in results if holds(r.error)]
            keep = {id(r) for r in held}
            ready = [r for r in results if id(r) not in keep]
            if ready:
                await self._settle(ready, [], fetched, unsettled)
            if not held:
                return
            group = [r.message for r in held]
            log.info("%s: %s; holding %d messages", self._spec.model, held[0].error, len(group))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
            wait = min(wait * 2, HOLD_MAX_S, self._spec.ack_wait_s / 3)
            if time.monotonic() - extended > self._spec.ack_wait_s / 3:
                extended = time.monotonic()
                await self._broker.extend([m.delivery for m in group])

    async def _score_safely(self, group: list[Message]) -> list[Result]:
        """:meth:`_call`, with an unexpected exception (a defect, a model returning what no
        answer can hold) made the error of the one message that raises it."""
        try:
            return await self._call(group)
        except Exception as exc:
            if len(group) == 1:
                log.exception("%s: message %s failed", self._spec.model, group[0].delivery.id)
                return [Result(group[0], error=InternalError(f"{type(exc).__name__}: {exc}"))]
            alone = await asyncio.gather(*(self._score_safely([m]) for m in group))
            return [result for results in alone for result in results]

    async def _settle(
        self,
        results: list[Result],
        dead: list[Publication],
        fetched: float,
        unsettled: dict[int, Delivery],
    ) -> None:
        spec, series = self._spec, self._series
        publications = list(dead)
        retry: dict[float, list[Delivery]] = defaultdict(list)
        for result in results:
            delivery = result.message.delivery
            action = disposition(result.error, delivery.deliveries, spec.max_deliver)
            if action is Action.ANSWER:
                try:
                    publications.append(self._answer(result))
                except PitstopError as exc:  # an output JSON cannot carry
                    publications.append(self._dead(delivery, exc))
                except Exception as exc:  # outputs no answer can hold (no row for it)
                    log.exception("%s: the answer to %s failed", spec.model, delivery.id)
                    error = f"its answer could not be built: {type(exc).__name__}: {exc}"
                    publications.append(self._dead(delivery, error, "internal"))
            elif action is Action.DEAD:
                assert result.error is not None
                publications.append(self._dead(delivery, _as_error(result.error)))
            elif action is Action.RETRY:
                delay = backoff(delivery.deliveries, spec.backoff_s, spec.backoff_max_s)
                log.warning("%s: message %s failed on delivery %d (%s); again in %.1f s",
                            spec.model, delivery.id, delivery.deliveries, result.error,
                            delay)  # fmt: skip
                retry[delay].append(delivery)
            else:  # HOLD, given up because the consumer stops: deliver again at once
                retry[0.0].append(delivery)
        failed = await self._broker.complete(publications) if publications else []
        for delay, deliveries in retry.items():
            await self._broker.retry(deliveries, delay)
            for delivery in deliveries:
                unsettled.pop(id(delivery), None)
            series.count(Outcome.RETRIED, len(deliveries))
        if failed:
            series.count(Outcome.PUBLISH_FAILED, len(failed))
            await self._broker.retry(failed, BROKER_RETRY_S)
        for publication in publications:
            unsettled.pop(id(publication.delivery), None)
        lost = {id(d) for d in failed}
        done = [p for p in publications if id(p.delivery) not in lost]
        answered = sum(1 for p in done if not p.dead)
        series.count(Outcome.ANSWERED, answered)
        series.count(Outcome.DEAD_LETTERED, len(done) - answered)
        now, wall = time.monotonic(), time.time_ns()
        series.settled(
            np.full(len(done), now - fetched),
            np.array([(wall - p.delivery.published_ns) / 1e9 for p in done
                      if p.delivery.published_ns], dtype=np.float64),
        )  # fmt: skip

    async def _call(self, group: Sequence[Message]) -> list[Result]:
        spec = self._spec
        try:
            request, rows, failed = self._request(group)
        except PitstopError as exc:  # fields that feed no input; a model not served now
            return [Result(m, error=exc) for m in group]
        if not rows:
            return failed
        refused = {id(f.message) for f in failed}
        scoring = [m for m in group if id(m) not in refused]
        metadata = self._metadata(scoring[0].delivery.headers)
        try:
            served = await self._dataplane.infer(
                spec.model,
                self._version,
                request,
                metadata=metadata,
                transport="stream",
                record=False,  # one prediction per message, recorded as it is answered
            )
        except PitstopError as exc:
            if len(scoring) == 1 or holds(exc):
                return failed + [Result(m, error=exc) for m in scoring]
            half = len(scoring) // 2
            first, second = await asyncio.gather(
                self._call(scoring[:half]), self._call(scoring[half:])
            )
            return failed + first + second
        outputs = served.response.outputs
        if len(scoring) > 1 and any(
            a.ndim == 0 or a.shape[0] != sum(rows) for a in outputs.values()
        ):  # outputs not one row per input row: score the messages one by one
            alone = await asyncio.gather(*(self._call([m]) for m in scoring))
            return failed + [r for results in alone for r in results]
        results = list(failed)
        start = 0
        for message, count in zip(scoring, rows, strict=True):
            part = dict(outputs)
            if len(scoring) > 1:
                part = {name: array[start : start + count] for name, array in outputs.items()}
            results.append(Result(message, part, served))
            start += count
        return results

    def _metadata(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The request metadata of a group (its first message's headers, lower-cased, as HTTP
        headers reach the DataPlane): a bounded number, the policy's sticky header always."""
        metadata = {k.lower(): v for k, v in list(headers.items())[:MAX_METADATA]}
        sticky = self._dataplane.sticky_header(self._spec.model)
        if sticky and sticky not in metadata:
            found = next((v for k, v in headers.items() if k.lower() == sticky), None)
            if found is not None:
                metadata[sticky] = found
        return metadata

    def _request(self, group: Sequence[Message]) -> tuple[InferRequest, list[int], list[Result]]:
        """The group's request, each scored message's row count, and the messages that failed
        before the call (records whose fields do not convert)."""
        if group[0].request is not None:
            return messages.v2_request(group), [m.rows for m in group], []
        spec = self._spec
        signature = self._signature()
        records = [m.record or {} for m in group]
        inputs, ok, errors = messages.record_inputs(records, signature, spec.columns, spec.keep)
        failed = [Result(group[row], error=InvalidInput(reason)) for row, reason in errors.items()]
        rows = [1] * int(ok.sum())
        return InferRequest(inputs=inputs), rows, failed

    def _signature(self) -> tuple[TensorSpec, ...]:
        metadata = self._dataplane.model_metadata(self._spec.model, self._version)
        return tuple(metadata.inputs)

    def _answer(self, result: Result) -> Publication:
        served = result.served
        assert served is not None
        assert result.outputs is not None
        by = Answerer(self._spec.model, served.version, served.digest)
        predictions = self._dataplane.predictions
        if predictions is not None:
            predictions.record(
                self._spec.model, messages.prediction_id(result.message), served.version,
                served.arm, result.outputs,
            )  # fmt: skip
        body, headers = messages.answer(
            result.message, result.outputs, by, served.response.parameters, self._spec.keep
        )
        return Publication(result.message.delivery, body, headers)

    def _dead(
        self, delivery: Delivery, error: PitstopError | str, kind: str | None = None
    ) -> Publication:
        body, headers = messages.dead_letter(delivery, self._spec.model, error, kind)
        return Publication(delivery, body, headers, dead=True)

    async def _watch_lag(self) -> None:
        while True:
            try:
                lag = await self._broker.lag()
            except BrokerError as exc:
                log.debug("%s", exc)
            else:
                self._series.pending, self._series.unacked = lag.pending, lag.unacked
            await asyncio.sleep(self._spec.lag_interval_s)


def _undeliverable(delivery: Delivery) -> str:
    return (
        f"delivered {delivery.deliveries} times without an answer: its consumers stopped, "
        "stalled past ack_wait, or could not publish its answer each time"
    )


def _as_error(error: BaseException) -> PitstopError | str:
    return error if isinstance(error, PitstopError) else f"{type(error).__name__}: {error}"
