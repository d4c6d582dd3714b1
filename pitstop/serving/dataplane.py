"""The DataPlane: the single request path every transport calls.

resolve (alias → loaded version) → check the request against the signature → run the runtime in
the inference thread pool → select outputs. It raises only :mod:`pitstop.errors`; transports map
those to status codes.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pitstop.errors import (
    SERVER_FAILURES,
    DeadlineExceeded,
    InternalError,
    InvalidInput,
    Overloaded,
    PitstopError,
    Unavailable,
)
from pitstop.monitoring.attempt import Attempt, CacheUse, Observer, notify
from pitstop.monitoring.tracing import Tracing
from pitstop.protocol.prediction_id import new_id
from pitstop.protocol.reference import VersionRef, parse_ref
from pitstop.protocol.tensor import InferRequest, InferResponse
from pitstop.registry import DEFAULT_TARGET, TrafficPolicy
from pitstop.serving.cache import cacheable, request_digest
from pitstop.serving.call import Call, Progress
from pitstop.serving.conformance import check_inputs, check_requested, select_outputs
from pitstop.serving.decoupled import DecoupledExecution, respond
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.manager import DEFAULT_POLICY, ModelManager
from pitstop.serving.model_view import ModelView, ServerInfo, metadata_of
from pitstop.serving.parameters import priority_of
from pitstop.serving.prediction_log import PredictionLog
from pitstop.serving.sequence import SequenceFlags, Sequences, sequence_flags
from pitstop.serving.shadow import ShadowRunner
from pitstop.serving.statistics import Statistics
from pitstop.serving.traffic import choose, shadows_for

FALLBACK_REASONS: dict[type[PitstopError], str] = {
    InternalError: "error",
    Overloaded: "overloaded",
    DeadlineExceeded: "deadline",
    Unavailable: "unavailable",
}


@dataclass(frozen=True)
class Served:
    """An inference response and the version that produced it."""

    response: InferResponse
    version: int
    digest: str
    fallback: str | None = None
    """Why the policy's fallback answered instead of the chosen arm (error, overloaded,
    deadline, unavailable), or None."""
    decoupled: bool = False
    """One of a decoupled model's responses (there may be more, or there may have been none)."""
    arm: str = ""
    """The traffic policy's arm that answered ("" when the caller named the version)."""


class DataPlane(ModelView):
    """The request path over a :class:`ModelView` (the read side: readiness, metadata,
    configuration, statistics, repository)."""

    def __init__(
        self,
        manager: ModelManager,
        info: ServerInfo,
        default_timeout_us: int = 0,
        *,
        observers: Sequence[Observer] = (),
        tracing: Tracing | None = None,
        wants_metadata: bool = False,
        statistics: Statistics | None = None,
    ) -> None:
        """``observers`` see every attempt after the DataPlane's own :attr:`statistics` (the
        composition root builds the list: metrics, windows, behaviour, drift, logs, spans).
        ``tracing`` opens a span around each request and shadow copy (off when None).
        ``wants_metadata``: transports pass request headers / gRPC metadata (``traceparent``,
        ``x-request-id``) even when no traffic policy needs them."""
        super().__init__(manager, info, statistics)
        self._default_timeout_s = default_timeout_us / 1e6
        self._observers: tuple[Observer, ...] = (self.statistics, *observers)
        self.shadows = ShadowRunner(self._shadow_call)
        self.fallbacks: Counter[tuple[str, str]] = Counter()
        """(model, reason) → requests the fallback answered."""
        self._tracing = tracing
        self.wants_metadata = wants_metadata or tracing is not None
        self.sequences = Sequences()
        """The live sequences of stateful models."""
        self.predictions: PredictionLog | None = None
        """Recent predictions, for hosts that record their own (a stream records one per
        message); set by the Engine, None when ``PITSTOP_PREDICTIONS=off``."""

    async def infer(
        self,
        model: str,
        version: VersionRef,
        request: InferRequest,
        *,
        metadata: Mapping[str, str] | None = None,
        deadline: float | None = None,
        use_cache: bool = True,
        transport: str = "other",
        principal: str | None = None,
        record: bool = True,
    ) -> Served:
        """Serve one request. With no ``version`` the model's traffic policy picks the arm
        (``metadata`` holds lower-cased request headers, for a sticky key and the trace
        context), may answer from the fallback when the arm fails, and copies the request to
        shadows. ``deadline`` is when the request expires on the monotonic clock (the
        transport reads it from the request's ``timeout`` parameter or the caller's own
        deadline); None means the server default (``PITSTOP_DEFAULT_TIMEOUT_US``, 0: none).
        ``transport`` (rest, grpc, openai, ...) labels its metrics; ``principal`` (who sent
        it) goes to the access log. The response's id is its prediction id (the request's
        ``id``, else a generated UUIDv7), recorded for feedback unless ``record`` is false
        (then the response keeps the request's id). Raises only pitstop errors."""
        call = Call(
            metadata,
            deadline,
            use_cache,
            transport,
            time.monotonic_ns(),
            principal=principal,
            prediction_id=(request.id or new_id()) if record else None,
        )
        if self._tracing is None:
            return await self._route(model, version, request, call)
        attributes = {"pitstop.model": model, "pitstop.transport": transport}
        span = self._tracing.request("pitstop.request", metadata or {}, attributes)
        try:
            served = await self._route(model, version, request, call)
        except BaseException as exc:
            span.end(exc)
            raise
        span.end()
        return served

    async def _route(
        self, model: str, version: VersionRef, request: InferRequest, call: Call
    ) -> Served:
        flags = sequence_flags(request.parameters)
        if flags is not None:
            return await self._sequence(model, version, request, flags, call)
        if self._stateful(model, version):
            raise InvalidInput(
                f"inference request to model {model!r} must specify a non-zero or non-empty "
                "correlation ID (parameters.sequence_id): the model is stateful"
            )
        return await self._unary(model, version, request, call)

    async def _sequence(
        self,
        model: str,
        version: VersionRef,
        request: InferRequest,
        flags: SequenceFlags,
        call: Call,
    ) -> Served:
        """A request of a sequence: on the version its sequence is pinned to, after the
        sequence's previous request, never cached, shadowed or answered by a fallback."""
        sequences = self.sequences
        ticket = sequences.admit(
            model, version, flags, lambda ref: self._manager.resolve(model, ref),
            lambda: self._pick(model, call),
        )  # fmt: skip
        try:
            async with ticket.live.lock:
                fed = sequences.request(ticket, model, request)
                served = await self._serve(
                    model, ticket.version, fed, replace(call, use_cache=False),
                    routed=ticket.live.routed,
                )  # fmt: skip
                return replace(served, response=sequences.keep(ticket, model, served.response))
        except PitstopError:
            sequences.failed(ticket, model)
            raise
        finally:
            sequences.release(ticket)

    def _stateful(self, model: str, version: VersionRef) -> bool:
        try:
            return self._manager.resolve(model, version).record.manifest.sequence is not None
        except PitstopError:
            return False  # the unary path says what is wrong

    def _pick(self, model: str, call: Call) -> tuple[VersionRef, bool]:
        """The version a request without one goes to, and whether a traffic policy chose it."""
        policy = self._manager.policy(model)
        if policy is DEFAULT_POLICY or policy.is_default:
            return None, False
        return parse_ref(self._arm(model, policy, call)), True

    async def _unary(
        self, model: str, version: VersionRef, request: InferRequest, call: Call
    ) -> Served:
        if version is not None:
            return await self._serve(model, version, request, call)
        policy = self._manager.policy(model)
        if policy is DEFAULT_POLICY or policy.is_default:
            return await self._serve(model, None, request, call)
        # Routed by a policy (A/B, canary): outcomes are recorded for the rollout judge.
        target = self._arm(model, policy, call)
        fallback = policy.fallback if policy.fallback != target else None
        try:
            served = await self._serve(
                model,
                parse_ref(target),
                request,
                call,
                routed=True,
                falls_back=fallback is not None,
                arm=target,
            )
        except SERVER_FAILURES as exc:
            if fallback is None:
                raise
            reason = next(r for kind, r in FALLBACK_REASONS.items() if isinstance(exc, kind))
            self.fallbacks[(model, reason)] += 1
            # The fallback gets the server's default deadline: the request's own may be spent.
            relaxed = replace(call, deadline=None, fallback=reason)
            served = await self._serve(model, parse_ref(fallback), request, relaxed, arm=fallback)
        if policy.shadows:
            draws = [random.random() for _ in policy.shadows]
            for shadow in shadows_for(policy, target, draws):
                self.shadows.offer(model, shadow, request, served.response.outputs)
        return served

    def _arm(self, model: str, policy: TrafficPolicy, call: Call) -> str:
        """The arm of ``policy`` that serves a request (by its sticky key or a random draw)."""
        metadata = call.metadata
        sticky = metadata.get(policy.sticky_header) if metadata and policy.sticky_header else None
        target = choose(policy, sticky, random.random())
        if target != DEFAULT_TARGET and not self._manager.servable(model, parse_ref(target)):
            target = DEFAULT_TARGET  # an arm still loading (or failed) serves from production
        return target

    async def infer_stream(
        self,
        model: str,
        version: VersionRef,
        request: InferRequest,
        *,
        metadata: Mapping[str, str] | None = None,
        deadline: float | None = None,
        transport: str = "other",
        principal: str | None = None,
    ) -> AsyncGenerator[Served, None]:
        """Serve one request as a stream: a decoupled version's responses as its model gives
        them (any number, none too), any other version's one response exactly as :meth:`infer`
        serves it. The arm is chosen as for :meth:`infer`; a decoupled stream never falls back
        (responses may already be out) and is not shadowed. Errors before the first response
        come from the first ``__anext__``; later ones end the stream. A decoupled stream has
        no trace span of its own (its steps may run in other tasks than the one that began
        it)."""
        call = Call(
            metadata,
            deadline,
            True,
            transport,
            time.monotonic_ns(),
            principal=principal,
            prediction_id=request.id or new_id(),
        )
        target, routed, arm = version, False, ""
        if version is None:
            policy = self._manager.policy(model)
            if policy is not DEFAULT_POLICY and not policy.is_default:
                arm = self._arm(model, policy, call)
                target, routed = parse_ref(arm), True
        try:
            await self._manager.demand(model, target, call.deadline)
            loaded = self._manager.resolve(model, target)
        except PitstopError:  # the unary path raises it again, and counts it
            loaded = None
        if loaded is None or not isinstance(loaded.execution, DecoupledExecution):
            yield await self.infer(
                model, version, request, metadata=metadata, deadline=deadline,
                transport=transport, principal=principal,
            )  # fmt: skip
            return
        started = time.monotonic_ns()
        expires = call.deadline
        if expires is None and self._default_timeout_s:
            expires = time.monotonic() + self._default_timeout_s
        with self._manager.lease(model, target) as loaded:
            run = Progress(loaded)
            record = loaded.record
            outputs: dict[str, np.ndarray] = {}
            try:
                async for outputs in respond(run, request, expires):
                    response = self._response(model, loaded, request, outputs, call)
                    yield Served(response, record.number, record.digest, decoupled=True)
            except PitstopError as exc:
                ended = time.monotonic_ns()
                self._observe(run.attempt(request, call, started, ended, exc, routed, arm=arm))
                raise
            ended = time.monotonic_ns()
            self._observe(
                run.attempt(request, call, started, ended, None, routed, outputs=outputs, arm=arm)
            )

    async def _shadow_call(
        self, model: str, target: str, request: InferRequest
    ) -> Mapping[str, np.ndarray]:
        call = Call(None, None, False, "shadow", time.monotonic_ns())  # no prediction id
        if self._tracing is None:
            served = await self._serve(model, parse_ref(target), request, call)
            return served.response.outputs
        # Runs in the offering request's context: this span is that request's child.
        span = self._tracing.request("pitstop.shadow", None, {"pitstop.target": target}, False)
        try:
            served = await self._serve(model, parse_ref(target), request, call)
        except BaseException as exc:
            span.end(exc)
            raise
        span.end()
        return served.response.outputs

    async def _serve(
        self,
        model: str,
        version: VersionRef,
        request: InferRequest,
        call: Call,
        *,
        routed: bool = False,
        falls_back: bool = False,
        arm: str = "",
    ) -> Served:
        """One attempt on one version, handed to the observers once it ends. ``routed``: a
        traffic policy chose the version; ``falls_back``: a server failure will be answered by
        the policy's fallback (so this attempt would not be the caller's answer); ``arm``: the
        policy's target that chose it (for the prediction record)."""
        started = time.monotonic_ns()
        expires = call.deadline
        if expires is None and self._default_timeout_s:
            expires = time.monotonic() + self._default_timeout_s
        try:
            level = priority_of(request.parameters)
            await self._manager.demand(model, version, expires)  # a cold start waits here
            lease = self._manager.lease(model, version)
        except PitstopError as exc:
            ended = time.monotonic_ns()
            self._observe(Attempt(
                model=model, registered=self._registered(model), version=None, digest="",
                transport=call.transport, request=request, metadata=call.metadata,
                started_ns=started, elapsed_ns=ended - started,
                request_ns=ended - call.started_ns, error=exc, routed=routed,
                principal=call.principal,
            ))  # fmt: skip
            raise
        with lease as loaded:
            run = Progress(loaded)
            try:
                outputs = await self._run(run, request, expires, level, call.use_cache)
                response = self._response(model, loaded, request, outputs, call)
            except PitstopError as exc:
                ended = time.monotonic_ns()
                self._observe(run.attempt(
                    request, call, started, ended, exc, routed,
                    final=not (falls_back and isinstance(exc, SERVER_FAILURES)), arm=arm,
                ))  # fmt: skip
                raise
            ended = time.monotonic_ns()
            self._observe(
                run.attempt(request, call, started, ended, None, routed, outputs=outputs, arm=arm)
            )
        record = loaded.record
        return Served(response, record.number, record.digest, call.fallback, arm=arm)

    async def _run(
        self,
        run: Progress,
        request: InferRequest,
        deadline: float | None,
        priority: int,
        use_cache: bool,
    ) -> dict[str, np.ndarray]:
        """Check, look up the cache, execute; what happened is noted on ``run``."""
        loaded = run.loaded
        metadata = metadata_of(loaded)
        inputs = run.inputs = check_inputs(request, metadata.inputs)
        check_requested(request.outputs, metadata.outputs)
        execution = loaded.execution
        if execution is None:
            raise Unavailable(f"{loaded.key} is not loaded")
        cache = loaded.cache if use_cache and cacheable(inputs) else None
        key = b""
        if cache is not None:
            lookup = time.monotonic_ns()
            key = request_digest(inputs, [o.name for o in request.outputs])
            hit = cache.get(key)
            run.cache_ns = time.monotonic_ns() - lookup
            if hit is not None:
                run.cache = CacheUse.HIT
                return hit
            run.cache = CacheUse.MISS
        run.submitted_wall_ns = time.time_ns()
        run.executed = await execution.run(inputs, deadline, priority)
        outputs = select_outputs(run.executed.outputs, request.outputs, metadata.outputs)
        if cache is not None:
            cache.put(key, outputs)
        return outputs

    @staticmethod
    def _response(
        model: str,
        loaded: LoadedVersion,
        request: InferRequest,
        outputs: dict[str, np.ndarray],
        call: Call,
    ) -> InferResponse:
        return InferResponse(
            model_name=model,
            model_version=str(loaded.record.number),
            outputs=outputs,
            id=call.prediction_id or request.id,
            parameters=metadata_of(loaded).totals(outputs),
            output_parameters={o.name: o.parameters for o in request.outputs},
        )

    def _observe(self, attempt: Attempt) -> None:
        if self._observers:
            notify(self._observers, attempt)

    def rejected(
        self, model: str, transport: str, error: PitstopError, principal: str | None = None
    ) -> None:
        """Count a request the transport refused before it reached :meth:`infer` (a body that
        does not decode), so error rates see it; ``principal``: who sent it, for the log."""
        now = time.monotonic_ns()
        self._observe(Attempt(
            model=model, registered=self._registered(model), version=None, digest="",
            transport=transport, request=None, metadata=None, started_ns=now, elapsed_ns=0,
            request_ns=0, error=error, principal=principal,
        ))  # fmt: skip

    async def close(self) -> None:
        """Stop background work (shadow workers)."""
        await self.shadows.close()
