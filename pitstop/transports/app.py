"""The server: HTTP (uvicorn + Starlette) and gRPC hosted over one started Engine.

``serve(settings)`` is ``pitstop serve``: it starts an :class:`~pitstop.engine.Engine`, builds a
:class:`Host` over it and runs both listeners until SIGTERM or SIGINT, then drains and stops the
Engine. Every HTTP route and the gRPC servicer receive the started Engine in their constructors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pitstop import __version__
from pitstop.engine import Engine
from pitstop.errors import Conflict, InvalidInput, NotFound, RegistryUnavailable
from pitstop.monitoring import logs
from pitstop.security.authorization import Action, parse_scopes
from pitstop.security.exposure import Exposure, exposure
from pitstop.security.gate import Gate
from pitstop.security.token import (
    ADMIN,
    READ,
    Authenticator,
    TokenFile,
    digest_of,
    new_secret,
    write_private,
)
from pitstop.settings import Settings
from pitstop.transports import openapi
from pitstop.transports.admin import AdminApi
from pitstop.transports.catalog import CatalogApi
from pitstop.transports.codec_pool import CodecPool
from pitstop.transports.codec_worker import CodecWorker
from pitstop.transports.compression import compression
from pitstop.transports.console import Console
from pitstop.transports.feedback import FeedbackApi
from pitstop.transports.generate import GenerateApi
from pitstop.transports.grpc import GrpcApi
from pitstop.transports.grpc_server import GrpcServer
from pitstop.transports.http11 import protocol
from pitstop.transports.kit import EXCEPTION_HANDLERS, guarded
from pitstop.transports.listener import refuse_new_connections, shared_socket
from pitstop.transports.observability import ObservabilityApi
from pitstop.transports.openai import OpenAIApi
from pitstop.transports.rest import RestApi
from pitstop.transports.scoring import ScoringApi
from pitstop.transports.shared_memory import SharedMemory
from pitstop.transports.shared_memory_api import SharedMemoryApi
from pitstop.transports.shared_tensors import SharedTensors
from pitstop.transports.supervisor import Supervisor, end_with_parent
from pitstop.transports.tls import TlsFiles

log = logging.getLogger(__name__)

BACKLOG_DRAIN_S = 0.1
"""Once new connections are refused, how long the event loop has to accept the queued ones."""

SWITCH_INTERVAL_S = 0.0005
"""How long a thread holding the GIL keeps it while another waits (Python's default: 5 ms)."""

READY_POLL_S = 0.05
"""How often a starting worker checks whether it is ready to listen."""

LATE_REQUEST_WINDOW_S = 0.25
"""After the listener closes, how long requests on already-open connections may still arrive."""


class Server(uvicorn.Server):
    """uvicorn with the shutdown load balancers need.

    On SIGTERM the Engine drains at once (readiness false), but new connections are still
    accepted for ``grace_s`` (so load balancers notice before we stop listening); then uvicorn
    stops accepting, lets in-flight requests finish (``timeout_graceful_shutdown``) and the
    process exits 0. SIGINT keeps uvicorn's behaviour (a second one forces exit).
    """

    def __init__(self, config: uvicorn.Config, engine: Engine, grace_s: float) -> None:
        super().__init__(config)
        self._engine = engine
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._terminating = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of whatever the main thread was
        # doing, maybe holding the log queue's lock: taking any lock here (logging does, so
        # does starting a thread) could wait for ever. Flags only; the loop does the rest.
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            # uvicorn re-raises captured signals once serve() returns, which would interrupt
            # the Engine's orderly stop after it: the shutdown is ours to finish.
            self._captured_signals.clear()
            return
        if self._terminating:
            return
        self._terminating = True
        if self._loop is None:  # not serving yet: stop as soon as it starts
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._begin_grace)

    def _begin_grace(self) -> None:
        """On the event loop, after SIGTERM: not ready at once, listening for ``grace_s``."""
        self._engine.begin_drain()
        log.info("SIGTERM: not ready; still serving for %.1f s, then draining", self._grace_s)
        assert self._loop is not None
        self._loop.call_later(self._grace_s, self._stop_listening)

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


class Host:
    """HTTP and gRPC over one started Engine. Build it on the Engine's event loop.

    The security gate is built here from the settings (inference open or not, certificate
    scopes, rate limits) over ``authenticator``; TLS material comes from ``tls`` (None: plain
    TCP), which :meth:`serve` keeps following for rotations."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        authenticator: Authenticator,
        tls: TlsFiles | None = None,
    ) -> None:
        self.engine = engine
        self._settings = settings
        self.tls = tls
        self.exposure = server_exposure(settings)
        self.gate = Gate(
            authenticator,
            open_inference=self.exposure.open_inference,
            certificate_scopes=settings.tls_client_scopes,
            rate_limit=settings.rate_limit,
            burst=settings.rate_burst,
            share=settings.rate_share,
            on_denied=lambda action, reason: engine.observability.access.denied(
                action.value, reason
            ),
        )
        worker = CodecWorker(settings.decode_memory_bytes)
        worker.start()  # its process imports while models load
        self.codecs = CodecPool(worker, max_waiting=settings.max_queue_size)
        limit = settings.max_request_bytes
        gate = self.gate
        self.shared_memory = (
            SharedMemory(
                settings.worker_dir / "shared-memory.json" if settings.worker_dir else None
            )
            if settings.system_shared_memory
            else None
        )
        shared = SharedTensors(self.shared_memory)
        self.routes: list[Route] = [
            *(
                rest := RestApi(
                    engine, limit, gate, self.codecs, shared, insecure=self.exposure.insecure
                )
            ).routes(),
            *SharedMemoryApi(engine, gate, shared).routes(),
            *GenerateApi(engine, limit, gate).routes(),
            *OpenAIApi(engine, limit, gate).routes(),
            *ScoringApi(
                engine, limit, gate, self.codecs, settings.default_model, __version__
            ).routes(),
            *AdminApi(engine, gate).routes(),
            *FeedbackApi(engine, limit, gate).routes(),
            *ObservabilityApi(engine, gate).routes(),
            *CatalogApi(engine, gate).routes(),
            *(Console().routes() if settings.console else []),
        ]
        described = orjson.dumps(openapi.document(__version__))

        async def openapi_json(_request: Request) -> Response:
            return Response(described, media_type="application/json")

        self.routes.append(
            Route(
                "/openapi.json",
                guarded(openapi_json, engine, gate, Action.DESCRIBE),
                methods=["GET"],
            )
        )
        app = Starlette(routes=self.routes, exception_handlers=EXCEPTION_HANDLERS)
        # A trailing slash is a different path (404 naming it), not a redirect clients must follow.
        app.router.redirect_slashes = False
        self.asgi: ASGIApp = compression(
            rest.front(app),
            limit,
            settings.compress_min_bytes if settings.compress_responses else None,
        )
        self.grpc = GrpcApi(
            engine, gate, self.codecs, shared, typed_outputs=settings.grpc_typed_outputs
        )
        self._server: Server | None = None

    async def serve(self) -> None:
        """Listen (gRPC, then HTTP) until told to exit, then drain both and close the codecs.
        The Engine stays started: its owner stops it."""
        settings = self._settings
        config = uvicorn.Config(
            self.asgi,
            host=settings.host,
            port=settings.http_port,
            log_level=settings.log_level,
            log_config=None,  # uvicorn's loggers go through our handler (JSON or text, off-loop)
            access_log=False,
            timeout_graceful_shutdown=int(settings.drain_timeout_s),
            lifespan="off",  # the Engine's lifetime is its owner's, not the ASGI app's
            http=protocol(settings.max_header_bytes),
            ws="none",  # no WebSocket routes: an upgrade request is served as plain HTTP
            h11_max_incomplete_event_size=settings.max_header_bytes,
        )
        watching: asyncio.Task[None] | None = None
        if self.tls is not None:
            config.ssl_certfile, config.ssl_keyfile = self.tls.certificate, self.tls.key
            config.load()
            config.ssl = self.tls.context  # reloaded in place when the files change
            watching = asyncio.create_task(self.tls.watch(), name="tls-files")
        self._server = Server(config, self.engine, settings.shutdown_grace_s)
        worker = settings.worker_dir is not None  # one of several sharing the ports
        try:
            if worker and not await self._until_ready():
                self.codecs.close()
                return
            await self._listen(worker)
        finally:
            if watching is not None:
                watching.cancel()
            if self.shared_memory is not None:
                self.shared_memory.close()  # the mappings; the regions stay registered

    async def _listen(self, worker: bool) -> None:
        settings = self._settings
        assert self._server is not None
        grpc_server = GrpcServer(
            self.grpc,
            settings.grpc_max_message_bytes,
            share_port=worker,
            max_metadata_bytes=settings.max_header_bytes,
        )
        try:
            port = await grpc_server.start(settings.host, settings.grpc_port, self.tls)
            tls = "" if self.tls is None else " (mutual TLS)" if self.tls.mutual else " (TLS)"
            log.info("gRPC listening on %s:%d%s", settings.host, port, tls)
            sockets = [shared_socket(settings.host, settings.http_port)] if worker else None
            await self._server.serve(sockets)
        finally:
            self.engine.begin_drain()
            await grpc_server.stop(settings.drain_timeout_s)
            self.codecs.close()

    async def _until_ready(self) -> bool:
        """A worker listens once what it must serve is loaded: on a shared port the kernel
        would hand it new connections (and probes) while it still loads, answering 503 for a
        server whose other workers are ready. Bounded by the load timeout (then it listens,
        not ready, as a single server would). False when SIGTERM/SIGINT came meanwhile."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        settings = self._settings
        deadline = loop.time() + settings.load_timeout_s * (settings.load_retries + 1) + 30
        try:
            while not self.engine.dataplane.ready() and loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), READY_POLL_S)
                if stop.is_set():
                    return False
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        return True

    def exit(self) -> None:
        """Ask :meth:`serve` to stop (from any thread): as SIGINT does."""
        if self._server is not None:
            self._server.should_exit = True


ENV_TOKEN = "admin-env"
"""The name under which ``PITSTOP_ADMIN_TOKEN``'s digest is registered."""


def first_admin(engine: Engine, tokens: TokenFile) -> Path | None:
    """Create the first admin token in the registry when there is no token anywhere, and
    write its secret to ``admin.token`` (0600). Returns that file, or None. When replicas start
    together, one of them creates it (the others find it taken). With ``PITSTOP_ADMIN_TOKEN``
    set, register that secret instead (as ``admin-env``, replacing an earlier one) and write
    nothing."""
    actor = f"server:{engine.replica}"
    configured = engine.settings.admin_token
    if configured is not None:
        digest = digest_of(configured.get_secret_value())
        held = {t.name: t.sha256 for t in engine.registry.tokens.all()}
        if held.get(ENV_TOKEN) == digest:
            return None
        with contextlib.suppress(NotFound):  # another replica may rotate it at the same time
            if ENV_TOKEN in held:
                engine.registry.tokens.revoke(ENV_TOKEN, actor=actor)
        with contextlib.suppress(Conflict):
            engine.registry.tokens.create(ENV_TOKEN, digest, [ADMIN, READ], actor=actor)
        log.info("registered PITSTOP_ADMIN_TOKEN as the token %r", ENV_TOKEN)
        return None
    if tokens.load() or engine.registry.tokens.all():
        return None
    secret, digest = new_secret()
    try:
        engine.registry.tokens.create("admin", digest, [ADMIN, READ], actor=actor)
    except Conflict:
        return None
    write_private(tokens.admin_path, secret + "\n")
    return tokens.admin_path


Companion = Callable[[Engine], contextlib.AbstractAsyncContextManager[object]]
"""Another host over the same started Engine, run beside HTTP and gRPC (the stream consumers):
entered once the Engine started, left after the listeners drained, before the Engine stops.
It watches ``engine.draining`` (SIGTERM) to stop taking work."""


def serve(settings: Settings, companions: Sequence[Companion] = ()) -> None:
    """Run the server until SIGINT/SIGTERM: this process, or a supervisor of
    ``settings.workers`` worker processes sharing the ports (each worker runs the
    ``companions`` too)."""
    posture = server_exposure(settings)  # a server that must not start fails here, before
    tls = tls_files(settings)  # any worker; the supervisor's workers check again, in theirs
    if settings.workers > 1 and settings.worker_dir is None:
        stop_logging = logs.configure(settings.log_format, settings.log_level)
        try:
            code = Supervisor(settings).run()
        finally:
            stop_logging()
        raise SystemExit(code)
    if settings.worker_dir is not None:
        end_with_parent(settings.worker_dir)
    stop_logging = logs.configure(settings.log_format, settings.log_level)
    tokens = TokenFile(settings.home)
    if posture.insecure is not None:
        log.warning("INSECURE (PITSTOP_INSECURE): %s", posture.insecure)
    if not posture.open_inference:
        log.info("inference and metadata calls need a token (PITSTOP_INFERENCE_AUTH)")

    # Large bodies are coded in a thread (codec_pool): when the event loop's thread wants the
    # GIL back it waits for the switch interval, after every await that blocked. At the default
    # 5 ms a request needing a dozen hand-overs waits ~60 ms behind such a thread; at 0.5 ms, 6.
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    async def main() -> None:
        async with Engine(settings) as engine:
            try:
                created = await asyncio.to_thread(first_admin, engine, tokens)
            except RegistryUnavailable as exc:
                log.warning("could not check for an admin token: %s", exc)
                created = None
            if created is not None:
                log.info("created an admin token in %s (mode 0600)", created.resolve())
            elif settings.admin_token is None:
                log.info("management calls need a token: pitstop token create")
            with contextlib.suppress(RegistryUnavailable):  # the watch loop catches up later
                await engine.manager.refresh()  # serve with the tokens as they are now
            authenticator = Authenticator(tokens, shared=engine.manager.tokens)
            async with contextlib.AsyncExitStack() as stack:
                for companion in companions:
                    await stack.enter_async_context(companion(engine))
                await Host(engine, settings, authenticator, tls).serve()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    finally:
        stop_logging()


def server_exposure(settings: Settings) -> Exposure:
    """Whether inference is open, and why the server is insecure if it is; InvalidInput when
    the settings must not start a server (pitstop.security.exposure), or when
    ``PITSTOP_TLS_CLIENT_SCOPES`` grants a scope that does not parse."""
    for name, scopes in settings.tls_client_scopes.items():
        try:
            parse_scopes(scopes)
        except InvalidInput as exc:
            raise InvalidInput(f"PITSTOP_TLS_CLIENT_SCOPES[{name!r}]: {exc}") from None
    tls = settings.tls_cert is not None
    return exposure(
        settings.host, tls=tls, inference_auth=settings.inference_auth,
        insecure=settings.insecure,
    )  # fmt: skip


def tls_files(settings: Settings) -> TlsFiles | None:
    """The TLS files the settings name, read and checked; None without a certificate."""
    cert, key, ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert is None and key is None:
        if ca is not None:
            raise InvalidInput("PITSTOP_TLS_CLIENT_CA needs PITSTOP_TLS_CERT and PITSTOP_TLS_KEY")
        return None
    if cert is None or key is None:
        raise InvalidInput("TLS needs both PITSTOP_TLS_CERT and PITSTOP_TLS_KEY")
    return TlsFiles(cert, key, ca)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it), as uvicorn's ``loop="auto"``."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
