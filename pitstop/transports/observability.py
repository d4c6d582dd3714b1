"""Observability over HTTP: the routes of the Engine's monitoring parts
(:mod:`pitstop.engine.monitors`).

    GET /metrics                           Prometheus text format; observe: no token while
                                           inference is open (loopback), else a read token
    GET /v2/pitstop/models/{m}/drift       read: drift scores per version, worst feature first
                                           (``?refresh=1`` scores now instead of on the timer)
    GET /v2/pitstop/cost                   read: cost per model version (``?window_s=3600``)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop import __version__, errors
from pitstop.engine import Engine
from pitstop.monitoring.metrics import CONTENT_TYPE, MetricsExporter, OutcomeRow
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.serving.outcome_report import every_estimate
from pitstop.transports.kit import Endpoint, guarded

log = logging.getLogger(__name__)

OUTCOMES_EVERY_S = 1.0
"""A scrape reads the outcome estimates from the registry at most this often."""


class ObservabilityApi:
    """The routes above, over a started Engine."""

    def __init__(self, engine: Engine, gate: Gate) -> None:
        self._engine = engine
        self._gate = gate
        dataplane, observability = engine.dataplane, engine.observability
        exporter = MetricsExporter(
            server_version=__version__,
            inventory=engine.inventory,
            requests=observability.requests_everywhere,
            drift=observability.drift,
            cost=observability.cost_report if observability.cost is not None else None,
            streams=observability.streams_everywhere,
            access=observability.access_everywhere,
            outcomes=lambda: self._outcomes,
            feedback=self._feedback_counts,
        )
        self._outcomes: list[OutcomeRow] = []
        self._outcomes_at = -math.inf
        self._parts = (dataplane, observability, exporter)

    def routes(self) -> list[Route]:
        return [
            Route("/metrics", self._guard(self.metrics, Action.OBSERVE), methods=["GET"]),
            Route(
                "/v2/pitstop/models/{model}/drift",
                self._guard(self.drift, Action.READ),
                methods=["GET"],
            ),
            Route("/v2/pitstop/cost", self._guard(self.cost, Action.READ), methods=["GET"]),
        ]

    def _feedback_counts(self) -> dict[tuple[str, str], int]:
        try:
            return dict(self._engine.feedback.counts)
        except errors.NotFound:
            return {}

    def _guard(self, endpoint: Endpoint, action: Action) -> Endpoint:
        return guarded(endpoint, self._engine, self._gate, action)

    async def metrics(self, _request: Request) -> Response:
        _dataplane, _observability, exporter = self._parts
        if _observability.requests is None:
            raise errors.NotFound("metrics are off (PITSTOP_METRICS_ENABLED=false)")
        if time.monotonic() - self._outcomes_at >= OUTCOMES_EVERY_S:
            self._outcomes_at = time.monotonic()
            try:
                registry = self._engine.registry
                self._outcomes = await asyncio.to_thread(every_estimate, registry.outcomes)
            except errors.RegistryUnavailable as exc:
                log.warning("outcome metrics wait for the registry: %s", exc)
            except Exception:  # the other series must still be scraped
                log.exception("reading outcome metrics failed")
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
