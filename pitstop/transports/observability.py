"""Observability at the edge: the monitoring parts built from Settings, their HTTP routes and
their background loops.

    GET /metrics                           Prometheus text format; no token (read-only, standard)
    GET /v2/pitstop/models/{m}/drift       read: drift scores per version, worst feature first
                                           (``?refresh=1`` scores now instead of on the timer)
    GET /v2/pitstop/cost                   read: cost per model version (``?window_s=3600``)

The loops (drift scoring every ``drift_interval_s``, cost snapshots every
:data:`COST_TICK_S`) are started and cancelled by the app's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop import errors
from pitstop.monitoring.cost import CostReport, CostTracker, Usage
from pitstop.monitoring.drift_monitor import DriftMonitor
from pitstop.monitoring.logs import RequestLog
from pitstop.monitoring.metrics import CONTENT_TYPE, MetricsExporter
from pitstop.monitoring.requests import RequestRecorder
from pitstop.monitoring.tracing import Tracing
from pitstop.registry import Registry
from pitstop.security.token import READ, Authenticator
from pitstop.serving.dataplane import DataPlane
from pitstop.settings import Settings
from pitstop.transports.rest import error_response

log = logging.getLogger(__name__)

COST_TICK_S: Final = 15.0
"""Granularity of cost windows."""


class RegistryReferences:
    """The drift monitor's :class:`~pitstop.monitoring.drift_monitor.ReferenceStore`, on the
    registry; references built from traffic are recorded under this replica's name."""

    def __init__(self, registry: Registry, replica: str) -> None:
        self._registry = registry
        self._replica = replica

    def get(self, model: str, version: int) -> dict[str, Any] | None:
        stored = self._registry.references.get(model, version)
        return stored.profile if stored is not None else None

    def put_if_absent(self, model: str, version: int, profile: dict[str, Any]) -> bool:
        return self._registry.references.put(
            model, version, profile, source=str(profile.get("source", "requests")),
            actor=f"server:{self._replica}", replace=False,
        )  # fmt: skip


@dataclass
class Observability:
    """Every monitoring part one server runs; each is None when its setting turns it off."""

    settings: Settings
    requests: RequestRecorder | None
    drift: DriftMonitor | None
    tracing: Tracing | None
    request_log: RequestLog | None
    cost: CostTracker | None

    @classmethod
    def build(cls, settings: Settings, registry: Registry, replica: str) -> Observability:
        requests = RequestRecorder() if settings.metrics_enabled else None
        drift = None
        if settings.drift_enabled:
            drift = DriftMonitor(
                RegistryReferences(registry, replica),
                window_rows=settings.drift_window_rows,
                min_rows=settings.drift_min_rows,
                reference_rows=settings.drift_reference_rows,
            )
        tracing = Tracing.from_settings(
            settings.tracing_exporter, settings.tracing_endpoint, settings.tracing_sample_ratio
        )
        request_log = None
        if settings.log_requests:
            request_log = RequestLog(settings.log_payload_sample_rate, settings.log_redact)
        cost = None
        if settings.cost_per_hour > 0 and requests is not None:
            cost = CostTracker(settings.cost_per_hour, settings.replicas)
        return cls(settings, requests, drift, tracing, request_log, cost)

    def usage(self) -> dict[tuple[str, int], Usage]:
        if self.requests is None:
            return {}
        return {
            (s.model, s.version): Usage(s.rows, s.compute.total)
            for s in self.requests
            if s.version is not None
        }

    def cost_report(self, window_s: float | None = None) -> CostReport:
        if self.cost is None:
            raise errors.NotFound("cost is off: set PITSTOP_COST_PER_HOUR (metrics must be on)")
        return self.cost.report(self.usage(), window_s or self.settings.cost_window_s)

    def loops(self, dataplane: DataPlane) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The background loops to run (each until cancelled)."""
        found: list[Callable[[], Coroutine[Any, Any, None]]] = []
        drift, cost = self.drift, self.cost
        if drift is not None:

            async def score() -> None:
                while True:
                    await asyncio.sleep(self.settings.drift_interval_s)
                    held = {(v.model, v.version) for v in dataplane.inventory().versions}
                    drift.forget(held)
                    await drift.tick()

            found.append(score)
        if cost is not None:

            async def snapshot() -> None:
                while True:
                    await asyncio.sleep(COST_TICK_S)
                    cost.tick(self.usage())

            found.append(snapshot)
        return found


Endpoint = Callable[[Request], Awaitable[Response]]


class ObservabilityApi:
    """The routes above, attached to one DataPlane once the lifespan has built it."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator
        self._attached: tuple[DataPlane, Observability, MetricsExporter] | None = None

    def attach(self, dataplane: DataPlane, observability: Observability, version: str) -> None:
        exporter = MetricsExporter(
            server_version=version,
            inventory=dataplane.inventory,
            requests=observability.requests,
            drift=observability.drift,
            cost=observability.cost_report if observability.cost is not None else None,
        )
        self._attached = (dataplane, observability, exporter)

    def routes(self) -> list[Route]:
        return [
            Route("/metrics", self._guard(self.metrics, None), methods=["GET"]),
            Route(
                "/v2/pitstop/models/{model}/drift", self._guard(self.drift, READ), methods=["GET"]
            ),
            Route("/v2/pitstop/cost", self._guard(self.cost, READ), methods=["GET"]),
        ]

    @property
    def _parts(self) -> tuple[DataPlane, Observability, MetricsExporter]:
        if self._attached is None:
            raise errors.Unavailable("the server is starting")
        return self._attached

    def _guard(self, endpoint: Endpoint, scope: str | None) -> Endpoint:
        async def guarded(request: Request) -> Response:
            try:
                if scope is not None:
                    self._auth.require(request.headers.get("authorization"), scope)
                return await endpoint(request)
            except errors.PitstopError as error:
                return error_response(error)

        return guarded

    async def metrics(self, _request: Request) -> Response:
        _dataplane, _observability, exporter = self._parts
        if _observability.requests is None:
            raise errors.NotFound("metrics are off (PITSTOP_METRICS_ENABLED=false)")
        return Response(exporter.render(), media_type=CONTENT_TYPE)

    async def drift(self, request: Request) -> Response:
        dataplane, observability, _exporter = self._parts
        model = request.path_params["model"]
        dataplane.require_model(model)
        drift = observability.drift
        if drift is None:
            raise errors.NotFound("drift monitoring is off (PITSTOP_DRIFT_ENABLED=false)")
        if request.query_params.get("refresh") in ("1", "true"):
            await drift.tick()
        threshold = observability.settings.drift_psi_threshold
        scored = {r.version: r for r in drift.results(model)}
        versions = []
        for version in drift.versions(model):
            result = scored.get(version)
            body: dict[str, Any] = {"version": version, "status": drift.status(model, version)}
            if result is not None:
                body.update(result.to_json(threshold))
            versions.append(body)
        return JSONResponse({"model": model, "psi_threshold": threshold, "versions": versions})

    async def cost(self, request: Request) -> Response:
        _dataplane, observability, _exporter = self._parts
        raw = request.query_params.get("window_s")
        try:
            window = float(raw) if raw is not None else None
        except ValueError:
            raise errors.InvalidInput(f"window_s must be a number, got {raw!r}") from None
        if window is not None and not 0 < window < math.inf:
            raise errors.InvalidInput(f"window_s must be a positive number of seconds, got {raw!r}")
        return JSONResponse(observability.cost_report(window).to_json())
