"""The DataPlane: the single request path every transport calls.

resolve (alias → loaded version) → check the request against the signature → run the runtime in
the inference thread pool → select outputs. It raises only :mod:`pitstop.errors`; transports map
those to status codes.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np

from pitstop.errors import (
    DeadlineExceeded,
    InternalError,
    Overloaded,
    PitstopError,
    Unavailable,
)
from pitstop.monitoring.behaviour import BehaviourRecorder
from pitstop.monitoring.drift_monitor import DriftMonitor
from pitstop.monitoring.inventory import Inventory
from pitstop.monitoring.logs import RequestLog
from pitstop.monitoring.requests import RequestRecorder, VersionSeries
from pitstop.monitoring.tracing import RequestSpan, Tracing
from pitstop.protocol.model_config import ModelConfig, model_config
from pitstop.protocol.reference import VersionRef, parse_ref
from pitstop.protocol.tensor import InferRequest, InferResponse, ModelMetadata
from pitstop.registry import DEFAULT_TARGET
from pitstop.runtimes.base import RuntimeMetadata
from pitstop.serving.cache import cacheable, request_digest
from pitstop.serving.conformance import check_inputs, check_requested, select_outputs
from pitstop.serving.inventory import build_inventory
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.manager import DEFAULT_POLICY, ModelManager
from pitstop.serving.parameters import priority_of
from pitstop.serving.shadow import ShadowRunner
from pitstop.serving.statistics import Statistics
from pitstop.serving.traffic import choose, shadows_for
from pitstop.serving.version_policy import VersionState
from pitstop.serving.window import Windows, predictions_of

SERVER_FAILURES = (InternalError, Overloaded, DeadlineExceeded, Unavailable)
"""Failures that count against a version in a rollout (bad requests do not)."""

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
class _Call:
    """How one :meth:`DataPlane.infer` call is served, whichever version ends up serving it."""

    metadata: Mapping[str, str] | None
    deadline: float | None
    """Monotonic instant the request expires at; None: the server default."""
    use_cache: bool
    transport: str


SHADOW_CALL: Final = _Call(None, None, False, "shadow")
"""Shadow copies: no cache, the server's default deadline, counted apart."""


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
        requests: RequestRecorder | None = None,
        drift: DriftMonitor | None = None,
        tracing: Tracing | None = None,
        request_log: RequestLog | None = None,
    ) -> None:
        """Monitoring is off for each of ``requests`` (metrics), ``drift``, ``tracing`` and
        ``request_log`` left None; each costs one ``is None`` check per request then."""
        self._manager = manager
        self._info = info
        self._default_timeout_s = default_timeout_us / 1e6
        self._shutting_down = False
        self.statistics = Statistics()
        self.windows = Windows()
        """Recent outcomes per version, for the rollout controller."""
        self.shadows = ShadowRunner(self._shadow_call)
        self.fallbacks: Counter[tuple[str, str]] = Counter()
        """(model, reason) → requests the fallback answered."""
        self.behaviour = BehaviourRecorder()
        self.requests = requests
        self.drift = drift
        self._tracing = tracing
        self._request_log = request_log
        self.wants_metadata = tracing is not None or request_log is not None
        """Transports pass request headers / gRPC metadata (``traceparent``, ``x-request-id``)
        even when no traffic policy needs them."""

    @property
    def info(self) -> ServerInfo:
        return self._info

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return not self._shutting_down and self._manager.ready()

    def model_ready(self, model: str, version: VersionRef) -> bool:
        """False for a known model or version that cannot serve now; NotFound for an unknown
        one."""
        return self._manager.model_ready(model, version) and not self._shutting_down

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

    def model_config(self, model: str, version: VersionRef) -> ModelConfig:
        """Triton's model configuration of the version ``version`` (number, alias or default)
        resolves to; ``max_batch_size`` comes from its manifest's ``batching`` section."""
        loaded = self._manager.resolve(model, version)
        metadata = _metadata_of(loaded)
        record = loaded.record
        return model_config(
            model,
            metadata.platform,
            record.runtime,
            metadata.inputs,
            metadata.outputs,
            record.manifest.batching,
        )

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
    ) -> Served:
        """Serve one request. With no ``version`` the model's traffic policy picks the arm
        (``metadata`` holds lower-cased request headers, for a sticky key and the trace
        context), may answer from the fallback when the arm fails, and copies the request to
        shadows. ``deadline`` is when the request expires on the monotonic clock (the
        transport reads it from the request's ``timeout`` parameter or the caller's own
        deadline); None means the server default (``PITSTOP_DEFAULT_TIMEOUT_US``, 0: none).
        ``transport`` (rest, grpc, openai, ...) labels its metrics. Raises only pitstop
        errors."""
        call = _Call(metadata, deadline, use_cache, transport)
        if self._tracing is None and self._request_log is None:
            return await self._route(model, version, request, call)
        return await self._traced(model, version, request, call)

    async def _traced(
        self, model: str, version: VersionRef, request: InferRequest, call: _Call
    ) -> Served:
        """:meth:`infer` inside a request span and/or followed by a request log line."""
        metadata, transport = call.metadata, call.transport
        started = time.monotonic_ns()
        span: RequestSpan | None = None
        if self._tracing is not None:
            attributes = {"pitstop.model": model, "pitstop.transport": transport}
            span = self._tracing.request("pitstop.request", metadata or {}, attributes)
        served: Served | None = None
        error: BaseException | None = None
        try:
            served = await self._route(model, version, request, call)
            return served
        except BaseException as exc:
            error = exc
            raise
        finally:
            if span is not None:
                if served is not None:
                    span.annotate(served.version, served.digest, served.fallback)
                span.end(error)
            if self._request_log is not None:
                self._request_log.request(
                    request, metadata, model, transport,
                    None if served is None else (served.version, served.fallback),
                    None if served is None else served.response.outputs,
                    error, (time.monotonic_ns() - started) / 1e9,
                    None if span is None else span.trace_id,
                )  # fmt: skip

    async def _route(
        self, model: str, version: VersionRef, request: InferRequest, call: _Call
    ) -> Served:
        metadata = call.metadata
        if version is not None:
            return await self._serve(model, version, request, call)
        policy = self._manager.policy(model)
        if policy is DEFAULT_POLICY or policy.is_default:
            return await self._serve(model, None, request, call)
        # Routed by a policy (A/B, canary): record outcomes for the rollout judge.
        sticky = metadata.get(policy.sticky_header) if metadata and policy.sticky_header else None
        target = choose(policy, sticky, random.random())
        if target != DEFAULT_TARGET and not self._manager.can_serve(model, parse_ref(target)):
            target = DEFAULT_TARGET  # an arm still loading (or failed) serves from production
        try:
            served = await self._serve(model, parse_ref(target), request, call, observe=True)
        except SERVER_FAILURES as exc:
            fallback = policy.fallback
            if fallback is None or fallback == target:
                raise
            reason = next(r for kind, r in FALLBACK_REASONS.items() if isinstance(exc, kind))
            self.fallbacks[(model, reason)] += 1
            # The fallback gets the server's default deadline: the request's own may be spent.
            relaxed = replace(call, deadline=None)
            served = replace(
                await self._serve(model, parse_ref(fallback), request, relaxed), fallback=reason
            )
        if policy.shadows:
            draws = [random.random() for _ in policy.shadows]
            for shadow in shadows_for(policy, target, draws):
                self.shadows.offer(model, shadow, request, served.response.outputs)
        return served

    async def _shadow_call(
        self, model: str, target: str, request: InferRequest
    ) -> Mapping[str, np.ndarray]:
        ref = parse_ref(target)
        if self._tracing is None:
            served = await self._serve(model, ref, request, SHADOW_CALL)
            return served.response.outputs
        # Runs in the offering request's context: this span is that request's child.
        span = self._tracing.request("pitstop.shadow", None, {"pitstop.target": target}, False)
        try:
            served = await self._serve(model, ref, request, SHADOW_CALL)
        except BaseException as exc:
            span.end(exc)
            raise
        span.annotate(served.version, served.digest)
        span.end()
        return served.response.outputs

    async def _serve(
        self,
        model: str,
        version: VersionRef,
        request: InferRequest,
        call: _Call,
        observe: bool = False,
    ) -> Served:
        """One request on one version. ``observe`` records it in :attr:`windows` (policy-routed
        traffic only: the rollout judge needs it, plain traffic should not pay for it)."""
        started = time.monotonic_ns()
        transport, use_cache, expires = call.transport, call.use_cache, call.deadline
        if expires is None and self._default_timeout_s:
            expires = time.monotonic() + self._default_timeout_s
        try:
            level = priority_of(request.parameters)
            lease = self._manager.lease(model, version)
        except PitstopError as exc:
            if self.requests is not None:
                seconds = (time.monotonic_ns() - started) / 1e9
                self.requests.unresolved(self._registered(model), transport, exc, seconds)
            raise
        with lease as loaded:
            record = loaded.record
            series = None if self.requests is None else self.requests.series(model, record.number)
            try:
                outputs = await self._run(loaded, request, expires, level, use_cache, series)
            except PitstopError as exc:
                elapsed = time.monotonic_ns() - started
                self.statistics.record_failure(model, record.number, elapsed)
                if series is not None:
                    series.failed(transport, exc, elapsed / 1e9)
                if observe and isinstance(exc, SERVER_FAILURES):
                    self.windows.arm(model, record.number).record(elapsed / 1e6, False, [])
                raise
            metadata = _metadata_of(loaded)
        elapsed = time.monotonic_ns() - started
        if observe:
            self.windows.arm(model, record.number).record(
                elapsed / 1e6, True, predictions_of(outputs)
            )
        self.behaviour.observe(model, record.number, metadata.centroids, outputs)
        if series is not None:
            series.served(transport, elapsed / 1e9, _rows(outputs))
            series.outputs.observe(outputs)
        response = InferResponse(
            model_name=model,
            model_version=str(record.number),
            outputs=outputs,
            id=request.id,
            parameters=metadata.totals(outputs),
            output_parameters={o.name: o.parameters for o in request.outputs},
        )
        self.statistics.of(model, record.number).success.add(elapsed)
        return Served(response=response, version=record.number, digest=record.digest)

    async def _run(
        self,
        loaded: LoadedVersion,
        request: InferRequest,
        deadline: float | None,
        priority: int,
        use_cache: bool,
        series: VersionSeries | None = None,
    ) -> dict[str, np.ndarray]:
        metadata = _metadata_of(loaded)
        inputs = check_inputs(request, metadata.inputs)
        check_requested(request.outputs, metadata.outputs)
        if self.drift is not None:
            self.drift.record(loaded.key.model, loaded.key.version, inputs)
        execution = loaded.execution
        if execution is None:
            raise Unavailable(f"{loaded.key} is not loaded")
        stats = self.statistics.of(loaded.key.model, loaded.key.version)
        cache = loaded.cache if use_cache and cacheable(inputs) else None
        key = b""
        if cache is not None:
            lookup = time.monotonic_ns()
            key = request_digest(inputs, [o.name for o in request.outputs])
            hit = cache.get(key)
            if hit is not None:
                stats.cache_hit.add(time.monotonic_ns() - lookup)
                stats.inference_count += _rows(hit)
                if series is not None:
                    series.cache_hits += 1
                return hit
            stats.cache_miss.add(time.monotonic_ns() - lookup)
            if series is not None:
                series.cache_misses += 1
        submitted_ns = time.time_ns() if self._tracing is not None else 0
        executed = await execution.run(inputs, deadline, priority)
        outputs = select_outputs(executed.outputs, request.outputs, metadata.outputs)
        stats.record_execution(executed)
        if series is not None:
            series.executed(
                executed.queue_ns, executed.compute_ns, executed.batch_size,
                executed.counts_execution,
            )  # fmt: skip
        if self._tracing is not None:
            self._tracing.execution(
                submitted_ns, executed.queue_ns, executed.compute_ns, executed.batch_size
            )
        if cache is not None:
            cache.put(key, outputs)
        return outputs

    # -- management (repository and statistics extensions) -----------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows = self._manager.repository_index()
        return [row for row in rows if row["state"] == "READY"] if ready_only else rows

    async def load_model(self, model: str) -> None:
        await self._manager.load_model(model)

    async def unload_model(self, model: str) -> None:
        await self._manager.unload_model(model)

    def model_statistics(self, model: str | None, version: VersionRef) -> list[dict[str, Any]]:
        """Statistics extension rows; a version may be a number or an alias."""
        number: int | None = None
        if model is not None:
            self._manager.require_model(model)
            if isinstance(version, int):
                number = version
            elif version is not None:
                number = self._manager.resolve(model, version).key.version
        return [stats.to_json() for stats in self.statistics.select(model, number)]

    def inventory(self) -> Inventory:
        """What this server holds, for ``/metrics`` (event loop only)."""
        return build_inventory(self._manager, self.shadows, self.fallbacks, self.behaviour)

    def rejected(self, model: str, transport: str, error: PitstopError) -> None:
        """Count a request the transport refused before it reached :meth:`infer` (a body that
        does not decode), so error rates see it."""
        if self.requests is not None:
            self.requests.unresolved(self._registered(model), transport, error, 0.0)

    def require_model(self, model: str) -> None:
        """Raise ModelNotFound unless the registry (as last read) has ``model``."""
        self._manager.require_model(model)

    def _registered(self, model: str) -> str | None:
        """``model`` if the registry has it (so it may be a metric label), else None."""
        try:
            self._manager.require_model(model)
        except PitstopError:
            return None
        return model

    def begin_shutdown(self) -> None:
        """Readiness turns false at once; requests keep being served."""
        self._shutting_down = True

    async def close(self) -> None:
        """Stop background work (shadow workers)."""
        await self.shadows.close()


def _metadata_of(loaded: LoadedVersion) -> RuntimeMetadata:
    if loaded.metadata is None:
        raise Unavailable(f"{loaded.key} is {loaded.state.value}")
    return loaded.metadata


def _rows(outputs: Mapping[str, np.ndarray]) -> int:
    for array in outputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
