"""The DataPlane: the single request path every transport calls.

resolve (alias → loaded version) → check the request against the signature → run the runtime in
the inference thread pool → select outputs. It raises only :mod:`pitstop.errors`; transports map
those to status codes.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pitstop.errors import (
    SERVER_FAILURES,
    DeadlineExceeded,
    InternalError,
    Overloaded,
    PitstopError,
    Unavailable,
)
from pitstop.monitoring.attempt import Attempt, CacheUse, Observer, notify
from pitstop.monitoring.tracing import Tracing
from pitstop.protocol.model_config import DynamicBatching, ModelConfig, model_config
from pitstop.protocol.reference import VersionRef, parse_ref
from pitstop.protocol.scoring import Signature
from pitstop.protocol.tensor import InferRequest, InferResponse, ModelMetadata
from pitstop.registry import DEFAULT_TARGET
from pitstop.runtimes.base import RuntimeMetadata
from pitstop.serving.cache import cacheable, request_digest
from pitstop.serving.call import Call, Progress
from pitstop.serving.conformance import check_inputs, check_requested, select_outputs
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.manager import DEFAULT_POLICY, ModelManager
from pitstop.serving.parameters import priority_of
from pitstop.serving.repository import RepositoryEntry
from pitstop.serving.shadow import ShadowRunner
from pitstop.serving.statistics import Statistics, VersionStatistics
from pitstop.serving.traffic import choose, shadows_for
from pitstop.serving.version_policy import VersionState

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


@dataclass(frozen=True)
class ServerInfo:
    name: str
    version: str
    extensions: tuple[str, ...]


class DataPlane:
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
        self._manager = manager
        self._info = info
        self._default_timeout_s = default_timeout_us / 1e6
        self._draining = False
        self.statistics = statistics if statistics is not None else Statistics()
        self._observers: tuple[Observer, ...] = (self.statistics, *observers)
        self.shadows = ShadowRunner(self._shadow_call)
        self.fallbacks: Counter[tuple[str, str]] = Counter()
        """(model, reason) → requests the fallback answered."""
        self._tracing = tracing
        self.wants_metadata = wants_metadata or tracing is not None

    @property
    def info(self) -> ServerInfo:
        return self._info

    def live(self) -> bool:
        return True

    @property
    def draining(self) -> bool:
        """True from :meth:`begin_drain` on."""
        return self._draining

    def ready(self) -> bool:
        return not self._draining and self._manager.ready()

    def model_ready(self, model: str, version: VersionRef) -> bool:
        """False for a known model or version that cannot serve now; NotFound for an unknown
        one."""
        return self._manager.model_ready(model, version) and not self._draining

    def model_metadata(self, model: str, version: VersionRef) -> ModelMetadata:
        loaded = self._manager.resolve(model, version)
        metadata = _metadata_of(loaded)
        served = [
            str(v.key.version)
            for v in self._manager.versions_of(model)
            if v.state is VersionState.READY
        ]
        return ModelMetadata(
            name=model,
            versions=served,
            platform=metadata.platform,
            inputs=metadata.inputs,
            outputs=metadata.outputs,
        )

    def signature(self, model: str, version: VersionRef) -> Signature:
        """The inputs and column names of the version ``version`` resolves to: how a row- or
        table-shaped body (MLflow's ``/invocations``, KServe V1) becomes its tensors."""
        loaded = self._manager.resolve(model, version)
        return Signature(_metadata_of(loaded).inputs, loaded.record.manifest.columns)

    def model_config(self, model: str, version: VersionRef) -> ModelConfig:
        """Triton's model configuration of the version ``version`` (number, alias or default)
        resolves to; ``max_batch_size`` comes from its manifest's ``batching`` section."""
        loaded = self._manager.resolve(model, version)
        metadata = _metadata_of(loaded)
        record = loaded.record
        batching = record.manifest.batching
        return model_config(
            model,
            metadata.platform,
            record.runtime,
            metadata.inputs,
            metadata.outputs,
            0 if batching is None else batching.max_batch_size,
            None if batching is None else DynamicBatching(
                batching.preferred_batch_size, batching.max_queue_delay_microseconds
            ),
        )  # fmt: skip

    def sticky_header(self, model: str) -> str | None:
        """The request header whose value keeps a caller on one arm of ``model``'s traffic
        policy, or None (a stream groups messages by it before they become one request)."""
        policy = self._manager.policy(model)
        if policy is DEFAULT_POLICY or policy.is_default:
            return None
        return policy.sticky_header or None

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
    ) -> Served:
        """Serve one request. With no ``version`` the model's traffic policy picks the arm
        (``metadata`` holds lower-cased request headers, for a sticky key and the trace
        context), may answer from the fallback when the arm fails, and copies the request to
        shadows. ``deadline`` is when the request expires on the monotonic clock (the
        transport reads it from the request's ``timeout`` parameter or the caller's own
        deadline); None means the server default (``PITSTOP_DEFAULT_TIMEOUT_US``, 0: none).
        ``transport`` (rest, grpc, openai, ...) labels its metrics; ``principal`` (who sent
        it) goes to the access log. Raises only pitstop errors."""
        call = Call(
            metadata, deadline, use_cache, transport, time.monotonic_ns(), principal=principal
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
        metadata = call.metadata
        if version is not None:
            return await self._serve(model, version, request, call)
        policy = self._manager.policy(model)
        if policy is DEFAULT_POLICY or policy.is_default:
            return await self._serve(model, None, request, call)
        # Routed by a policy (A/B, canary): outcomes are recorded for the rollout judge.
        sticky = metadata.get(policy.sticky_header) if metadata and policy.sticky_header else None
        target = choose(policy, sticky, random.random())
        if target != DEFAULT_TARGET and not self._manager.can_serve(model, parse_ref(target)):
            target = DEFAULT_TARGET  # an arm still loading (or failed) serves from production
        fallback = policy.fallback if policy.fallback != target else None
        try:
            served = await self._serve(
                model,
                parse_ref(target),
                request,
                call,
                routed=True,
                falls_back=fallback is not None,
            )
        except SERVER_FAILURES as exc:
            if fallback is None:
                raise
            reason = next(r for kind, r in FALLBACK_REASONS.items() if isinstance(exc, kind))
            self.fallbacks[(model, reason)] += 1
            # The fallback gets the server's default deadline: the request's own may be spent.
            relaxed = replace(call, deadline=None, fallback=reason)
            served = await self._serve(model, parse_ref(fallback), request, relaxed)
        if policy.shadows:
            draws = [random.random() for _ in policy.shadows]
            for shadow in shadows_for(policy, target, draws):
                self.shadows.offer(model, shadow, request, served.response.outputs)
        return served

    async def _shadow_call(
        self, model: str, target: str, request: InferRequest
    ) -> Mapping[str, np.ndarray]:
        call = Call(None, None, False, "shadow", time.monotonic_ns())
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
    ) -> Served:
        """One attempt on one version, handed to the observers once it ends. ``routed``: a
        traffic policy chose the version; ``falls_back``: a server failure will be answered by
        the policy's fallback (so this attempt would not be the caller's answer)."""
        started = time.monotonic_ns()
        expires = call.deadline
        if expires is None and self._default_timeout_s:
            expires = time.monotonic() + self._default_timeout_s
        try:
            level = priority_of(request.parameters)
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
                response = self._response(model, loaded, request, outputs)
            except PitstopError as exc:
                ended = time.monotonic_ns()
                self._observe(run.attempt(
                    request, call, started, ended, exc, routed,
                    final=not (falls_back and isinstance(exc, SERVER_FAILURES)),
                ))  # fmt: skip
                raise
            ended = time.monotonic_ns()
            self._observe(run.attempt(request, call, started, ended, None, routed, outputs=outputs))
        record = loaded.record
        return Served(response, record.number, record.digest, call.fallback)

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
        metadata = _metadata_of(loaded)
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
        model: str, loaded: LoadedVersion, request: InferRequest, outputs: dict[str, np.ndarray]
    ) -> InferResponse:
        return InferResponse(
            model_name=model,
            model_version=str(loaded.record.number),
            outputs=outputs,
            id=request.id,
            parameters=_metadata_of(loaded).totals(outputs),
            output_parameters={o.name: o.parameters for o in request.outputs},
        )

    def _observe(self, attempt: Attempt) -> None:
        if self._observers:
            notify(self._observers, attempt)

    # -- management (repository and statistics extensions) -----------------------------------

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        entries = self._manager.repository_index()
        return [e for e in entries if e.state == "READY"] if ready_only else entries

    async def load_model(self, model: str) -> None:
        await self._manager.load_model(model)

    async def unload_model(self, model: str) -> None:
        await self._manager.unload_model(model)

    def model_statistics(self, model: str | None, version: VersionRef) -> list[VersionStatistics]:
        """Statistics extension rows, live: encode them before awaiting. A version may be a
        number or an alias."""
        number: int | None = None
        if model is not None:
            self._manager.require_model(model)
            if isinstance(version, int):
                number = version
            elif version is not None:
                number = self._manager.resolve(model, version).key.version
        return self.statistics.select(model, number)

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

    def require_model(self, model: str) -> None:
        """Raise ModelNotFound unless the registry (as last read) has ``model``."""
        self._manager.require_model(model)

    def _registered(self, model: str) -> bool:
        """Whether the registry has ``model`` (so it may be a metric label)."""
        try:
            self._manager.require_model(model)
        except PitstopError:
            return False
        return True

    def begin_drain(self) -> None:
        """Readiness turns false at once; requests keep being served."""
        self._draining = True

    async def close(self) -> None:
        """Stop background work (shadow workers)."""
        await self.shadows.close()


def _metadata_of(loaded: LoadedVersion) -> RuntimeMetadata:
    if loaded.metadata is None:
        raise Unavailable(f"{loaded.key} is {loaded.state.value}")
    return loaded.metadata
