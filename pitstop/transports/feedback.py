"""Feedback and outcomes over HTTP (docs/experiments.md).

POST /v2/models/{m}/feedback   infer: one item, a list, or {"feedback": [...]} of
                               {id, label | value | reward, at?, row?}; 200 with what became
                               of them, 404 when none of the ids is known, 400 naming the
                               first bad field (nothing stored)
GET  /v2/models/{m}/outcomes   read: accuracy / error rate / MAE / RMSE / mean reward /
                               conversion per version and arm, with confidence intervals
                               (?since=ISO time or Unix seconds, ?confidence=0.95)
GET  /v2/models/{m}/ab         read: each arm of the model's traffic policy against its
                               first (?arms=a,b, ?metric=, ?alpha=, ?power=, ?mde=,
                               ?min_samples=, ?since=)
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop import errors
from pitstop.engine import Engine
from pitstop.monitoring.outcome import Metric
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.serving.comparison import Design
from pitstop.serving.feedback import parse_items
from pitstop.serving.outcome_report import ab_report, outcomes
from pitstop.transports.body import read_json
from pitstop.transports.kit import Endpoint, guarded
from pitstop.transports.query import moment, number

MAX_FEEDBACK_BYTES = 8 * 1024 * 1024
"""Largest feedback body (10,000 items of about 800 bytes)."""


class FeedbackApi:
    """The routes above, over a started Engine."""

    def __init__(self, engine: Engine, max_request_bytes: int, gate: Gate) -> None:
        self._engine = engine
        self._limit = min(max_request_bytes, MAX_FEEDBACK_BYTES)
        self._gate = gate

    def routes(self) -> list[Route]:
        base = "/v2/models/{model}"
        return [
            Route(f"{base}/feedback", self._guard(self.feedback, Action.INFER), methods=["POST"]),
            Route(f"{base}/outcomes", self._guard(self.outcomes, Action.READ), methods=["GET"]),
            Route(f"{base}/ab", self._guard(self.ab, Action.READ), methods=["GET"]),
        ]

    def _guard(self, endpoint: Endpoint, action: Action) -> Endpoint:
        return guarded(endpoint, self._engine, self._gate, action)

    async def feedback(self, request: Request) -> Response:
        engine = self._engine
        model = request.path_params["model"]
        engine.dataplane.require_model(model)
        desk = engine.feedback
        try:
            items = parse_items(await read_json(request, self._limit))
        except errors.InvalidInput:
            desk.rejected(model)
            raise
        receipt = await desk.submit(model, items)
        if not receipt.accepted and (receipt.unknown or receipt.expired):
            named = [*receipt.unknown_ids, *receipt.expired_ids][:5]
            raise errors.NotFound(
                f"no prediction of model {model!r} has these ids ({receipt.unknown} unknown, "
                f"{receipt.expired} expired: kept {engine.settings.predictions_ttl_s:g} s): "
                f"{', '.join(repr(i) for i in named)}"
            )
        return JSONResponse(receipt.to_json())

    async def outcomes(self, request: Request) -> Response:
        model = request.path_params["model"]
        self._engine.dataplane.require_model(model)
        query = request.query_params
        since = moment(query.get("since"))
        confidence = number(query, "confidence", 0.95)
        if not 0 < confidence < 1:
            raise errors.InvalidInput(f"confidence must be between 0 and 1, got {confidence:g}")
        rows = await asyncio.to_thread(self._engine.registry.outcomes.sums, model, since=since)
        return JSONResponse({
            "model": model, "since": since.isoformat() if since else None,
            "confidence": confidence, "versions": outcomes(rows, confidence),
        })  # fmt: skip

    async def ab(self, request: Request) -> Response:
        model = request.path_params["model"]
        self._engine.dataplane.require_model(model)
        query = request.query_params
        since = moment(query.get("since"))
        design = Design.from_json({
            key: number(query, key, 0.0) for key in ("alpha", "power", "mde", "min_samples")
            if query.get(key) is not None
        })  # fmt: skip
        metrics = [Metric.parse(m) for m in query.get("metric", "").split(",") if m.strip()]
        registry = self._engine.registry
        if query.get("arms"):
            arms = [a.strip() for a in query["arms"].split(",") if a.strip()]
        else:
            policy = await asyncio.to_thread(registry.delivery.policy, model)
            arms = [arm.target for arm in policy.arms]
        if len(arms) < 2:
            raise errors.InvalidInput(
                f"model {model!r} has one arm ({arms[0] if arms else 'none'}): set a traffic "
                "policy with two or more, or name them (?arms=production,4)"
            )
        rows = await asyncio.to_thread(registry.outcomes.sums, model, since=since)
        return JSONResponse({
            "model": model, "since": since.isoformat() if since else None,
            "design": design.to_json(), "arms": arms,
            "test": "mSPRT (mixture sequential probability ratio test): always-valid p-values "
                    "and confidence intervals, safe to check repeatedly",
            "reports": ab_report(rows, arms, design, metrics),
        })  # fmt: skip
