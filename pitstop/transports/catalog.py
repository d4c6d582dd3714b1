"""The catalog over HTTP: what exists, what serves, what changed, and moving an alias.

    GET /v2/pitstop/whoami                        read:  the caller's principal and scopes
    GET /v2/pitstop/overview                      read:  every model at a glance (one call)
    GET /v2/pitstop/models/{m}/versions           read:  versions with lineage, manifest,
                                                         signatures, what points at them
    GET /v2/pitstop/models/{m}/history            read:  audit events newest first, each with
                                                         the traffic split it left behind
                                                         (``?limit=200&since=<ISO time>``)
    GET /v2/pitstop/live                          read:  the last hour of rate, errors and
                                                         p50/p95/p99 per model (``?model=&since=``)
    PUT /v2/pitstop/models/{m}/aliases/{alias}    admin: ``{"version": 3, "reason": "..."}``

What the CLI reads from the registry directly, a browser (the console, ``/console``) reads
here: the console is a client of these routes and of the delivery routes (``admin.py``), with
no other access. Registry reads run in worker threads.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop import __version__, errors
from pitstop.engine import Engine
from pitstop.protocol.plain import plain
from pitstop.registry import AuditEvent, Registry, replay
from pitstop.registry.status import status_rows
from pitstop.security.authorization import Action, Principal
from pitstop.security.gate import Gate
from pitstop.transports.body import read_json_object
from pitstop.transports.kit import Endpoint, guarded, principal_of
from pitstop.transports.query import integer, moment, number

PREFIX: Final = "/v2/pitstop/models/{model}"
MAX_BODY: Final = 64 * 1024
MAX_HISTORY: Final = 5000
"""Events one history call returns at most (and the overview reads for alias history)."""
LIVE_WINDOW_S: Final = 60.0
"""The overview's rate, errors and quantiles cover about the last minute."""


def scope_names(principal: Principal) -> list[str]:
    return [
        scope.kind.value + (f":{scope.pattern}" if scope.pattern else "")
        for scope in principal.scopes
    ]


class CatalogApi:
    """The routes above, over a started Engine."""

    def __init__(self, engine: Engine, gate: Gate) -> None:
        self._engine = engine
        self._gate = gate

    def routes(self) -> list[Route]:
        read, admin = Action.READ, Action.ADMIN
        return [
            Route("/v2/pitstop/whoami", self._guard(self.whoami, read), methods=["GET"]),
            Route("/v2/pitstop/overview", self._guard(self.overview, read), methods=["GET"]),
            Route("/v2/pitstop/live", self._guard(self.live, read), methods=["GET"]),
            Route(PREFIX + "/versions", self._guard(self.versions, read), methods=["GET"]),
            Route(PREFIX + "/history", self._guard(self.history, read), methods=["GET"]),
            Route(PREFIX + "/aliases/{alias}", self._guard(self.set_alias, admin), methods=["PUT"]),
        ]

    def _guard(self, endpoint: Endpoint, action: Action) -> Endpoint:
        return guarded(endpoint, self._engine, self._gate, action)

    @property
    def _registry(self) -> Registry:
        return self._engine.registry

    async def whoami(self, request: Request) -> Response:
        principal = principal_of(request)
        observability = self._engine.observability
        return JSONResponse(
            {
                "principal": principal.name,
                "scopes": scope_names(principal),
                "admin": self._gate.permits(principal, Action.ADMIN, None),
                "server": {"version": __version__, "replica": self._engine.replica},
                "features": {
                    "metrics": observability.requests is not None,
                    "drift": observability.drift is not None,
                    "cost": observability.cost is not None,
                },
            }
        )

    async def overview(self, _request: Request) -> Response:
        """Registry reads in a worker thread; this server's own numbers (inventory, live
        series, cost, drift) on the event loop, where they are written."""
        registry, settings = self._registry, self._engine.settings

        def read() -> tuple[Any, ...]:
            return (
                registry.models(),
                registry.serving_states(),
                registry.history(limit=MAX_HISTORY),
                registry.delivery.policies(),
                {r.model: r for r in registry.delivery.rollouts(active_only=True)},
                registry.replicas.live(settings.replica_timeout_s),
                registry.generation(),
            )

        models, states, events, policies, rollouts, replicas, generation = await asyncio.to_thread(
            read
        )
        body = {
            "at": datetime.now(UTC),
            "server": {"version": __version__, "replica": self._engine.replica},
            "generation": generation,
            "replicas": replicas,
            "models": self._model_rows(models, states, events, policies, rollouts),
        }
        return JSONResponse(plain(body))

    def _model_rows(
        self,
        models: Any,
        states: Any,
        events: list[AuditEvent],
        policies: Any,
        rollouts: Any,
    ) -> list[dict[str, Any]]:
        observability = self._engine.observability
        rows = status_rows(models, states, events)
        live = observability.live.latest(LIVE_WINDOW_S)
        loaded = self._engine.inventory().versions
        cost = self._cost_per_1k()
        drift = observability.drift
        threshold = observability.settings.drift_psi_threshold
        found = []
        for record in models:
            name = record.name
            worst = None
            if drift is not None:
                scores = [r.max_psi for r in drift.results(name) if r.max_psi is not None]
                worst = max(scores) if scores else None
            point = live.get(name)
            policy = policies.get(name)
            rollout = rollouts.get(name)
            found.append(
                {
                    "name": name,
                    "latest_version": record.latest_version,
                    "version_count": record.version_count,
                    "created_at": record.created_at,
                    "aliases": [row for row in rows if row.model == name],
                    "policy": policy.to_json() if policy is not None else None,
                    "rollout": rollout.to_json() if rollout is not None else None,
                    "loaded": [
                        {
                            "version": v.version,
                            "state": v.state,
                            "inflight": v.inflight,
                            "queued": v.queued,
                            "load_seconds": v.load_seconds,
                            "memory_bytes": v.memory_bytes,
                            "on_demand": v.on_demand,
                            "worker_restarts": v.worker_restarts,
                            "worker_failure": v.worker_failure,
                        }
                        for v in loaded
                        if v.model == name
                    ],
                    "failures": [
                        {"version": s.version, "replica": s.replica, "error": s.error}
                        for s in states
                        if s.model == name and s.state == "FAILED"
                    ],
                    "live": point.to_json() if point is not None else None,
                    "cost_per_1k": cost.get(name),
                    "drift": None
                    if worst is None
                    else {"max_psi": worst, "drifted": worst >= threshold},
                }
            )
        return found

    def _cost_per_1k(self) -> dict[str, float]:
        observability = self._engine.observability
        if observability.cost is None:
            return {}
        totals: dict[str, tuple[float, int]] = {}
        for row in observability.cost_report().rows:
            cost, predictions = totals.get(row.model, (0.0, 0))
            totals[row.model] = (cost + row.cost, predictions + row.predictions)
        return {m: 1000 * c / n for m, (c, n) in totals.items() if n > 0}

    async def versions(self, request: Request) -> Response:
        model = request.path_params["model"]

        def read() -> dict[str, Any]:
            registry = self._registry
            versions = registry.versions(model)
            aliases = registry.aliases(model)
            signatures = registry.signatures.of(model)
            pointing: dict[int, list[str]] = {}
            for alias, target in aliases.items():
                pointing.setdefault(target, []).append(alias)
            return {
                "model": model,
                "aliases": aliases,
                "versions": [
                    {
                        "number": v.number,
                        "digest": v.digest,
                        "runtime": v.runtime,
                        "size_bytes": v.size_bytes,
                        "files": len(v.files),
                        "meta": v.meta,
                        "created_at": v.created_at,
                        "created_by": v.created_by,
                        "trust_pickle": v.trust_pickle,
                        "trust_code": v.trust_code,
                        "manifest": v.manifest.to_json(),
                        "aliases": sorted(pointing.get(v.number, [])),
                        "signatures": [
                            {"key_id": s.key_id, "algorithm": s.algorithm, "signed_by": s.signed_by}
                            for s in signatures
                            if s.version == v.number
                        ],
                    }
                    for v in versions
                ],
            }

        return JSONResponse(plain(await asyncio.to_thread(read)))

    async def history(self, request: Request) -> Response:
        model = request.path_params["model"]
        limit = integer(request.query_params, "limit", 200, 1, MAX_HISTORY)
        since = moment(request.query_params.get("since"))

        def read() -> dict[str, Any]:
            self._registry.versions(model)  # ModelNotFound for an unknown model
            events = self._registry.history(model)
            entries = replay(events)
            shown = [e for e in events if since is None or e.at >= since][:limit]
            serving = {entry.event.id: entry for entry in entries}
            first = _last_before(entries, since)
            return {
                "model": model,
                "events": [
                    {
                        **plain(event),
                        "shares": plain(serving[event.id].shares) if event.id in serving else None,
                    }
                    for event in shown
                ],
                "timeline": [
                    {
                        "at": entry.at,
                        "shares": entry.shares,
                        "shadows": entry.shadows,
                        "aliases": entry.aliases,
                        "event": entry.event.id,
                        "action": entry.event.action,
                        "actor": entry.event.actor,
                        "reason": entry.event.reason,
                    }
                    for entry in entries
                    if since is None or entry.at >= since or entry is first
                ],
            }

        return JSONResponse(plain(await asyncio.to_thread(read)))

    async def live(self, request: Request) -> Response:
        live = self._engine.observability.live
        since = number(request.query_params, "since", 0.0)
        model = request.query_params.get("model")
        models = [model] if model else sorted(live.models())
        points = live.points(models, since)
        return JSONResponse(
            {
                "at": datetime.now(UTC).timestamp(),
                "models": {m: [p.to_json() for p in found] for m, found in points.items()},
            }
        )

    async def set_alias(self, request: Request) -> Response:
        model, alias = request.path_params["model"], request.path_params["alias"]
        body = await read_json_object(request, MAX_BODY)
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise errors.InvalidInput("'version' must be a version number")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise errors.InvalidInput("'reason' must be a string")
        actor = principal_of(request).name
        await asyncio.to_thread(
            self._registry.set_alias, model, alias, version, actor=actor, reason=reason
        )
        return JSONResponse({"model": model, "alias": alias, "version": version})


def _last_before(entries: Any, since: datetime | None) -> Any:
    """The timeline entry in force at ``since`` (so a chart starting there knows the split)."""
    if since is None:
        return None
    found = None
    for entry in entries:
        if entry.at < since:
            found = entry
    return found
