"""Composition root: builds the registry, manager, DataPlane and transports from Settings, and
owns their lifetime (the Starlette lifespan and the uvicorn server)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import FrameType

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pitstop import __version__
from pitstop.monitoring import logs
from pitstop.monitoring.tracing import Tracing
from pitstop.registry import Registry
from pitstop.security.token import Authenticator, TokenFile
from pitstop.serving.dataplane import DataPlane, ServerInfo
from pitstop.serving.manager import ManagerOptions, ModelManager
from pitstop.serving.operations import Operations
from pitstop.serving.rollout_controller import RolloutController
from pitstop.settings import Settings
from pitstop.transports import openapi
from pitstop.transports.admin import AdminApi
from pitstop.transports.codec_pool import CodecPool
from pitstop.transports.codec_worker import CodecWorker
from pitstop.transports.grpc import GrpcApi, GrpcServer
from pitstop.transports.http11 import JsonErrorsProtocol
from pitstop.transports.listener import refuse_new_connections
from pitstop.transports.observability import Observability, ObservabilityApi
from pitstop.transports.openai import OpenAIApi
from pitstop.transports.rest import EXCEPTION_HANDLERS, RestApi

log = logging.getLogger(__name__)

BACKLOG_DRAIN_S = 0.1
"""Once new connections are refused, how long the event loop has to accept the queued ones."""

LATE_REQUEST_WINDOW_S = 0.25
"""After the listener closes, how long requests on already-open connections may still arrive."""

EXTENSIONS = ("binary_tensor_data", "model_configuration", "model_repository", "statistics")
"""Protocol extensions both transports implement, advertised in the server metadata."""


@dataclass
class Components:
    """Everything one server process runs, wired once."""

    registry: Registry
    manager: ModelManager
    dataplane: DataPlane
    observability: Observability


def replica_name(settings: Settings) -> str:
    return settings.replica or f"{socket.gethostname()}:{settings.http_port}"


def build_components(settings: Settings, tracing: Tracing | None = None) -> Components:
    """``tracing`` replaces the one the settings describe (tests export spans in memory)."""
    registry = Registry.open(settings.resolved_registry_url(), settings.resolved_artifact_root())
    manager = ModelManager(
        registry,
        ManagerOptions(
            replica=replica_name(settings),
            warmup_runs=settings.warmup_runs,
            load_timeout_s=settings.load_timeout_s,
            load_attempts=settings.load_retries + 1,
            retry_backoff_s=settings.load_retry_backoff_s,
            inference_threads=settings.inference_threads,
            max_queue_size=settings.max_queue_size,
            drain_timeout_s=settings.drain_timeout_s,
            runtime_threads=settings.runtime_threads,
        ),
    )
    info = ServerInfo(name="pitstop", version=__version__, extensions=EXTENSIONS)
    observability = Observability.build(settings, registry, replica_name(settings))
    if tracing is not None:
        observability.tracing = tracing
    dataplane = DataPlane(
        manager,
        info,
        default_timeout_us=settings.default_timeout_us,
        requests=observability.requests,
        drift=observability.drift,
        tracing=observability.tracing,
        request_log=observability.request_log,
    )
    return Components(registry, manager, dataplane, observability)


class Server(uvicorn.Server):
    """uvicorn with the shutdown load balancers need.

    On SIGTERM readiness turns false at once, but new connections are still accepted for
    ``grace_s`` (so load balancers notice before we stop listening); then uvicorn stops accepting,
    lets in-flight requests finish (``timeout_graceful_shutdown``) and the process exits 0.
    SIGINT keeps uvicorn's behaviour (a second one forces exit).
    """

    def __init__(self, config: uvicorn.Config, api: RestApi, grace_s: float) -> None:
        super().__init__(config)
        self._api = api
        self._grace_s = grace_s
        self._terminating = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            return
        if self._terminating:
            return
        self._terminating = True
        self._api.begin_shutdown()
        log.info("SIGTERM: not ready; still serving for %.1f s, then draining", self._grace_s)
        timer = threading.Timer(self._grace_s, self._stop_listening)
        timer.daemon = True
        timer.start()

    def _stop_listening(self) -> None:
        self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Closing the listener resets connections the kernel queued but we had not accepted, and
        # uvicorn closes idle connections right after it stops listening: a client that had just
        # connected (or reused a keep-alive connection) may already have sent its request, which
        # would be lost. So: refuse new connections, accept what is queued, stop listening, give
        # requests on open connections a moment to arrive, and only then let uvicorn close what
        # is idle and wait for what is in flight.
        refusing = [
            refuse_new_connections(sock) for server in self.servers for sock in server.sockets
        ]
        if any(refusing):
            await asyncio.sleep(BACKLOG_DRAIN_S)
        for server in self.servers:
            server.close()
        await asyncio.sleep(LATE_REQUEST_WINDOW_S)
        await super().shutdown(sockets)


def build_app(
    settings: Settings, authenticator: Authenticator, tracing: Tracing | None = None
) -> tuple[ASGIApp, RestApi, list[Route]]:
    """The ASGI app, its REST API and every HTTP route it serves (what /openapi.json documents).
    Components are built inside the lifespan, on the serving event loop."""
    holder: dict[str, Components] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        components = await asyncio.to_thread(build_components, settings, tracing)
        worker.start()  # imports in its own process while models load
        holder["components"] = components
        api.attach(components.dataplane)
        openai_api.attach(components.dataplane)
        admin_api.attach(Operations(components.registry, components.dataplane))
        observability_api.attach(components.dataplane, components.observability, __version__)
        await asyncio.to_thread(components.registry.clear_serving_states, replica_name(settings))
        try:
            await components.manager.refresh()
        except Exception:
            log.exception("first registry read failed; will retry")
        # Everything imported and built so far lives as long as the process: move it out of
        # the cyclic collector's way (see ModelManager, which does the same after each load).
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(
            components.manager.watch(settings.watch_interval_s), name="pitstop-registry-watch"
        )
        controller = RolloutController(
            components.registry.delivery,
            components.dataplane.windows,
            replica_name(settings),
            tick_s=settings.rollout_tick_s,
        )
        background = [watcher]
        if settings.rollout_controller:
            background.append(loop.create_task(controller.run(), name="pitstop-rollouts"))
        for run in components.observability.loops(components.dataplane):
            background.append(loop.create_task(run(), name=f"pitstop-{run.__name__}"))
        grpc_server: GrpcServer | None = None
        try:
            # On this event loop, so gRPC calls and HTTP requests share one DataPlane.
            grpc_server = GrpcServer(
                GrpcApi(components.dataplane, authenticator, codecs),
                settings.grpc_max_message_bytes,
            )
            port = await grpc_server.start(settings.host, settings.grpc_port)
            log.info("gRPC listening on %s:%d", settings.host, port)
            yield
        finally:
            components.dataplane.begin_shutdown()
            if grpc_server is not None:
                await grpc_server.stop(settings.drain_timeout_s)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await components.dataplane.close()
            await components.manager.close()
            await asyncio.to_thread(components.registry.close)
            if components.observability.tracing is not None:
                await asyncio.to_thread(components.observability.tracing.shutdown)
            codecs.close()

    worker = CodecWorker(settings.decode_memory_bytes)
    codecs = CodecPool(worker, max_waiting=settings.max_queue_size)
    api = RestApi(settings.max_request_bytes, authenticator, codecs)
    openai_api = OpenAIApi(max_request_bytes=settings.max_request_bytes)
    admin_api = AdminApi(authenticator)
    observability_api = ObservabilityApi(authenticator)
    routes = api.routes() + openai_api.routes() + admin_api.routes() + observability_api.routes()
    described = orjson.dumps(openapi.document(__version__))

    async def openapi_json(_request: Request) -> Response:
        return Response(described, media_type="application/json")

    routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    # A trailing slash is a different path (404 naming it), not a redirect clients must follow.
    app.router.redirect_slashes = False
    return api.front(app), api, routes


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM."""
    stop_logging = logs.configure(settings.log_format, settings.log_level)
    tokens = TokenFile(settings.home)
    created = tokens.ensure_admin()
    if created is not None:
        log.info("created an admin token in %s (mode 0600)", created.resolve())
    else:
        log.info("management calls need a token from %s", tokens.path.resolve())
    app, api, _routes = build_app(settings, Authenticator(tokens))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers go through our handler (JSON or text, off-loop)
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        lifespan="on",
        http=JsonErrorsProtocol,
        ws="none",  # no WebSocket routes: an upgrade request is served as plain HTTP
    )
    try:
        Server(config, api, settings.shutdown_grace_s).run()
    finally:
        stop_logging()
