"""The delivery admin API over HTTP: traffic policies, rollouts, rollback.

    GET  /v2/pitstop/models/{m}/traffic                 read:  policy, rollout, fallbacks, shadows
    PUT  /v2/pitstop/models/{m}/traffic                 admin: replace the traffic policy
    POST /v2/pitstop/models/{m}/deploy                  admin: start a rollout
    POST /v2/pitstop/models/{m}/rollout/{action}        admin: pause | resume | abort
    POST /v2/pitstop/models/{m}/rollback                admin: production → previous version

Bodies are JSON; every call needs ``Authorization: Bearer <token>`` (or a mapped client
certificate) with the scope shown, and is audited with the principal (``token:<name>``).
Routes answer through ``kit.guarded``. Blocking registry calls run in worker threads; the
decisions are :class:`pitstop.registry.Delivery`'s, which the CLI calls too. Every replica
applies a change at its next registry poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop import errors
from pitstop.engine import Engine
from pitstop.monitoring.drift import sample_psi
from pitstop.registry import Guard, Rollout, RolloutState, RolloutVerb, TrafficPolicy
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.serving.evidence import SharedEvidence
from pitstop.serving.rollout import ArmWindow, Verdict
from pitstop.serving.rollout_controller import judge_step
from pitstop.transports.body import read_json_object
from pitstop.transports.kit import Endpoint, guarded, principal_of

MAX_BODY = 1024 * 1024
PREFIX = "/v2/pitstop/models/{model}"

READ, ADMIN = Action.READ, Action.ADMIN

STEERING = frozenset({RolloutVerb.PAUSE, RolloutVerb.RESUME, RolloutVerb.ABORT})
"""What an operator may do to a running rollout over HTTP (the controller steps it)."""


class AdminApi:
    """The delivery routes over a started Engine (its registry and DataPlane)."""

    def __init__(self, engine: Engine, gate: Gate) -> None:
        self._engine = engine
        self._gate = gate
        self._delivery = engine.registry.delivery
        self._dataplane = engine.dataplane

    def routes(self) -> list[Route]:
        return [
            Route(PREFIX + "/traffic", self._guard(self.traffic, READ), methods=["GET"]),
            Route(PREFIX + "/traffic", self._guard(self.set_traffic, ADMIN), methods=["PUT"]),
            Route(PREFIX + "/deploy", self._guard(self.deploy, ADMIN), methods=["POST"]),
            Route(PREFIX + "/rollout/{action}", self._guard(self.rollout, ADMIN), methods=["POST"]),
            Route(PREFIX + "/rollback", self._guard(self.rollback, ADMIN), methods=["POST"]),
        ]

    def _guard(
        self, endpoint: Callable[[Request, str], Awaitable[Any]], action: Action
    ) -> Endpoint:
        """``endpoint(request, actor)`` as a route admitted for ``action``: the answer is
        JSON, and the actor (the principal, ``token:<name>``) goes to the audit history."""

        async def route(request: Request) -> Response:
            return JSONResponse(await endpoint(request, principal_of(request).name))

        return guarded(route, self._engine, self._gate, action)

    async def traffic(self, request: Request, _actor: str) -> Any:
        """Policy, current or last rollout, and what this server observed of fallbacks and
        shadows for the model."""
        model = request.path_params["model"]
        policy, rollout = await asyncio.to_thread(self._delivery.traffic, model)
        shadows = self._dataplane.shadows
        return {
            "model": model,
            "policy": policy.to_json(),
            "rollout": rollout.to_json() if rollout is not None else None,
            "assessment": await self._assess(rollout) if rollout is not None else None,
            "fallbacks": {
                reason: count
                for (name, reason), count in self._dataplane.fallbacks.items()
                if name == model
            },
            "shadows": {
                target: comparison.to_json()
                for (name, target), comparison in shadows.comparisons.items()
                if name == model
            },
            "shadow_dropped": shadows.dropped.get(model, 0),
        }

    async def _assess(self, rollout: Rollout) -> dict[str, Any] | None:
        """What the rollout controller sees of a RUNNING rollout's step now: each arm's
        numbers, the guard they are held to, and the verdict with its reason."""
        if rollout.state is not RolloutState.RUNNING:
            return None
        settings = self._engine.settings
        evidence = SharedEvidence(
            self._engine.registry, settings.replica_timeout_s, settings.rollout_publish_s
        )
        gathered = await asyncio.to_thread(evidence.gather, rollout)
        if isinstance(gathered, str):
            return {"verdict": Verdict.HOLD.value, "reason": gathered, "canary": None,
                    "baseline": None}  # fmt: skip
        canary, baseline = gathered
        waited = time.time() - rollout.step_started_at.timestamp()
        judgement = judge_step(rollout, canary, baseline, waited)
        guard = rollout.guard
        needed = max(guard.min_requests, guard.min_predictions)
        compared = min(len(canary.predictions), len(baseline.predictions))
        divergence = (
            sample_psi(baseline.predictions, canary.predictions) if compared >= needed else None
        )
        return {
            "verdict": judgement.verdict.value,
            "reason": judgement.reason,
            "waited_s": round(waited, 3),
            "canary": _window(canary),
            "baseline": _window(baseline),
            "divergence": divergence,
        }

    async def set_traffic(self, request: Request, actor: str) -> Any:
        body = await _body(request)
        policy = TrafficPolicy.from_json(body)
        await asyncio.to_thread(
            self._delivery.set_policy, request.path_params["model"], policy, actor=actor,
            reason=_reason(body),
        )  # fmt: skip
        return policy.to_json()

    async def deploy(self, request: Request, actor: str) -> Any:
        body = await _body(request)
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise errors.InvalidInput("'version' must be a version number")
        steps = body.get("steps", [5, 25, 50, 100])
        if not isinstance(steps, list) or not all(isinstance(s, int | float) for s in steps):
            raise errors.InvalidInput("'steps' must be a list of percentages")
        interval = body.get("interval_s", 60)
        if not isinstance(interval, int | float) or isinstance(interval, bool):
            raise errors.InvalidInput("'interval_s' must be a number of seconds")
        guard = body.get("guard", {})
        if not isinstance(guard, dict):
            raise errors.InvalidInput("'guard' must be an object")
        rollout = await asyncio.to_thread(
            self._delivery.start_rollout, request.path_params["model"], version,
            steps=list(steps), interval_s=float(interval), guard=Guard.from_json(guard),
            actor=actor, reason=_reason(body),
        )  # fmt: skip
        return rollout.to_json()

    async def rollout(self, request: Request, actor: str) -> Any:
        model, action = request.path_params["model"], request.path_params["action"]
        if action not in STEERING:
            raise errors.NotFound(f"unknown rollout action {action!r}; use pause, resume, abort")
        verb = RolloutVerb(action)
        body = await _body(request, optional=True)
        active = await asyncio.to_thread(self._delivery.active_rollout, model)
        if active is None:
            raise errors.NotFound(f"model {model!r} has no active rollout")
        updated = await asyncio.to_thread(
            self._delivery.advance, active.id, verb, actor=actor, reason=_reason(body)
        )
        return updated.to_json()

    async def rollback(self, request: Request, actor: str) -> Any:
        model = request.path_params["model"]
        body = await _body(request, optional=True)
        version = await asyncio.to_thread(
            self._delivery.rollback, model, actor=actor, reason=_reason(body)
        )
        return {"model": model, "production": version}


async def _body(request: Request, optional: bool = False) -> dict[str, Any]:
    return await read_json_object(request, MAX_BODY, optional=optional)


def _window(window: ArmWindow) -> dict[str, Any]:
    return {
        "requests": window.requests,
        "errors": window.errors,
        "error_rate": window.error_rate,
        "p99_ms": window.p99_ms,
    }


def _reason(body: dict[str, Any]) -> str | None:
    reason = body.get("reason")
    return reason if isinstance(reason, str) else None
