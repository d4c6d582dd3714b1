"""gRPC transport: ``inference.GRPCInferenceService`` (KServe V2 + Triton extensions) on grpc.aio.

Every RPC converts (:mod:`pitstop.transports.grpc_convert`), calls the DataPlane, converts back:
the same request path as REST. Errors map to status codes in one table, :data:`CODE_BY_ERROR`.
The server runs on the event loop of the HTTP server and is started and stopped by its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc
import grpc.aio

from pitstop import errors
from pitstop.engine import Engine
from pitstop.protocol.binary_codec import decode_body
from pitstop.protocol.reference import parse_ref
from pitstop.security.token import ADMIN, Authenticator
from pitstop.serving.parameters import deadline_of
from pitstop.transports import grpc_convert as convert
from pitstop.transports.codec_pool import CodecPool, outputs_size
from pitstop.transports.headers import DIGEST_HEADER, VERSION_HEADER
from pitstop.transports.proto import inference_pb2 as pb

log = logging.getLogger(__name__)

SERVICE: Final = "inference.GRPCInferenceService"

CODE_BY_ERROR: Final[tuple[tuple[type[errors.PitstopError], grpc.StatusCode], ...]] = (
    (errors.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unsupported, grpc.StatusCode.UNIMPLEMENTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.InternalError, grpc.StatusCode.INTERNAL),
)
"""Most specific first: the first class an error is an instance of decides its code."""

STREAM_WINDOW: Final = 64
"""Requests of one ModelStreamInfer call served concurrently; the stream stops reading beyond
that until the oldest response is sent (responses keep request order)."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]


def code_of(error: errors.PitstopError) -> grpc.StatusCode:
    for kind, code in CODE_BY_ERROR:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class GrpcApi:
    """The V2 RPCs over a started Engine's DataPlane."""

    def __init__(self, engine: Engine, authenticator: Authenticator, codecs: CodecPool) -> None:
        self._dataplane = engine.dataplane
        self._auth = authenticator
        self._codecs = codecs

    def handler(self) -> grpc.GenericRpcHandler:
        """The route table: RPC name → method, with its message types."""
        unary: dict[str, tuple[Callable[[Any, Context], Awaitable[Any]], Any, Any]] = {
            "ServerLive": (self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": (self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": (
                self.server_metadata,
                pb.ServerMetadataRequest,
                pb.ServerMetadataResponse,
            ),
            "ModelMetadata": (
                self.model_metadata,
                pb.ModelMetadataRequest,
                pb.ModelMetadataResponse,
            ),
            "ModelConfig": (self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
            "ModelInfer": (self.model_infer, bytes, pb.ModelInferResponse),
            "ModelStatistics": (
                self.model_statistics,
                pb.ModelStatisticsRequest,
                pb.ModelStatisticsResponse,
            ),
            "RepositoryIndex": (
                self.repository_index,
                pb.RepositoryIndexRequest,
                pb.RepositoryIndexResponse,
            ),
            "RepositoryModelLoad": (
                self.repository_model_load,
                pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse,
            ),
            "RepositoryModelUnload": (
                self.repository_model_unload,
                pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse,
            ),
        }
        # Requests arrive as bytes and are parsed here, not by grpc: a message that does not
        # parse is the client's error (INVALID_ARGUMENT naming the message), where grpc's own
        # deserializer answers INTERNAL; and a large one is parsed off the event loop.
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(
                _guard(method, request, self._codecs),
                response_serializer=response.SerializeToString,
            )
            for name, (method, request, response) in unary.items()
        }
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # -- health and metadata -----------------------------------------------------------------

    async def server_live(self, _r: pb.ServerLiveRequest, _c: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dataplane.live())

    async def server_ready(self, _r: pb.ServerReadyRequest, _c: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    async def model_ready(self, r: pb.ModelReadyRequest, _c: Context) -> pb.ModelReadyResponse:
        """Not ready for an unknown model or version too, as Triton answers (its clients poll
        ModelReady until a model appears); REST tells the two apart with 404 and 503."""
        try:
            ready = self._dataplane.model_ready(r.name, parse_ref(r.version))
        except errors.NotFound:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(
        self, _r: pb.ServerMetadataRequest, _c: Context
    ) -> pb.ServerMetadataResponse:
        info = self._dataplane.info
        return pb.ServerMetadataResponse(
            name=info.name, version=info.version, extensions=list(info.extensions)
        )

    async def model_metadata(
        self, r: pb.ModelMetadataRequest, _c: Context
    ) -> pb.ModelMetadataResponse:
        return convert.encode_model_metadata(
            self._dataplane.model_metadata(r.name, parse_ref(r.version))
        )

    async def model_config(self, r: pb.ModelConfigRequest, _c: Context) -> pb.ModelConfigResponse:
        return convert.encode_model_config(
            self._dataplane.model_config(r.name, parse_ref(r.version))
        )

    # -- inference ---------------------------------------------------------------------------

    async def model_infer(self, data: bytes, c: Context) -> pb.ModelInferResponse:
        """Trailing metadata names the version and digest that answered."""
        metadata = _metadata(c) if self._dataplane.wants_metadata else None
        response, version, digest = await self._infer(data, c.time_remaining(), metadata)
        c.set_trailing_metadata(((VERSION_HEADER, version), (DIGEST_HEADER, digest)))
        return response

    async def _infer(
        self,
        data: bytes,
        remaining_s: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> tuple[pb.ModelInferResponse, str, str]:
        """Parse, decode (both off the event loop when large) and serve one ModelInferRequest."""
        codecs = self._codecs
        # Small messages are parsed here; of large ones only the top-level fields are read, since
        # parsing typed contents holds the GIL throughout.
        parsed = convert.parse(pb.ModelInferRequest, data) if codecs.inline(len(data)) else None
        if parsed is not None:
            name, version_text = parsed.model_name, parsed.model_version
            raw = bool(parsed.raw_input_contents)
        else:
            name, version_text, raw = await codecs.run(len(data), convert.peek_infer, data)
        model, version = name, parse_ref(version_text)
        if not model:
            raise errors.InvalidInput("model_name must be set")
        try:
            if parsed is not None:
                request = convert.decode_infer_request(parsed)
            elif raw:  # a few large byte strings: parsed and decoded at memcpy speed
                message = await codecs.run(len(data), convert.parse, pb.ModelInferRequest, data)
                request = await codecs.run(len(data), convert.decode_infer_request, message)
                del message
            else:
                # Typed contents are parsed and converted element by element in C calls that
                # hold the GIL: done in the codec worker, handed back as raw tensors.
                normal = await codecs.isolate(convert.normalize_infer, data, None)
                request = await codecs.run(
                    len(normal.body), decode_body, normal.body, normal.header_length
                )
            now = time.monotonic()
            deadline = deadline_of(request.parameters, now)
        except errors.InvalidInput as error:  # counted like the DataPlane's own refusals
            self._dataplane.rejected(model, "grpc", error)
            raise
        if remaining_s is not None:
            # The client's gRPC deadline bounds the request too: work it gave up on is never
            # started (the earlier of it and the request's own ``timeout`` parameter).
            client = now + remaining_s
            deadline = client if deadline is None else min(deadline, client)
        served = await self._dataplane.infer(
            model, version, request, metadata=metadata, deadline=deadline, transport="grpc"
        )
        response = await self._codecs.run(
            outputs_size(served.response.outputs),
            convert.encode_infer_response,
            served.response,
            raw=raw,
        )
        return response, str(served.version), served.digest

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], _c: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One response per request, in request order; a failed request yields its
        ``error_message`` and the stream goes on (Triton's behaviour)."""
        # The semaphore bounds the requests in flight; the queue keeps their order and never
        # blocks, so the reader can always signal the end (None) and never strands a task.
        slots = asyncio.Semaphore(STREAM_WINDOW)
        window: asyncio.Queue[asyncio.Task[pb.ModelStreamInferResponse] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    window.put_nowait(asyncio.ensure_future(self._stream_one(request)))
            finally:
                window.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (task := await window.get()) is not None:
                response = await task
                slots.release()
                yield response
            await reader  # a failure to read the stream ends the call with it
        finally:
            reader.cancel()
            while not window.empty():
                left = window.get_nowait()
                if left is not None:
                    left.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _stream_one(self, data: bytes) -> pb.ModelStreamInferResponse:
        try:
            response, _, _ = await self._infer(data)
        except errors.PitstopError as error:
            return pb.ModelStreamInferResponse(error_message=str(error))
        except Exception as exc:
            log.exception("a ModelStreamInfer request failed")
            return pb.ModelStreamInferResponse(error_message=f"internal error: {exc}")
        return pb.ModelStreamInferResponse(infer_response=response)

    # -- statistics and repository -----------------------------------------------------------

    async def model_statistics(
        self, r: pb.ModelStatisticsRequest, _c: Context
    ) -> pb.ModelStatisticsResponse:
        rows = self._dataplane.model_statistics(r.name or None, parse_ref(r.version))
        return convert.encode_statistics(rows)

    async def repository_index(
        self, r: pb.RepositoryIndexRequest, _c: Context
    ) -> pb.RepositoryIndexResponse:
        return convert.encode_repository_index(self._dataplane.repository_index(r.ready))

    async def repository_model_load(
        self, r: pb.RepositoryModelLoadRequest, c: Context
    ) -> pb.RepositoryModelLoadResponse:
        self._auth.require(_authorization(c), ADMIN)
        await self._dataplane.load_model(r.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, r: pb.RepositoryModelUnloadRequest, c: Context
    ) -> pb.RepositoryModelUnloadResponse:
        self._auth.require(_authorization(c), ADMIN)
        await self._dataplane.unload_model(r.model_name)
        return pb.RepositoryModelUnloadResponse()


def _metadata(context: Context) -> dict[str, str]:
    """Invocation metadata as lower-cased text headers (``traceparent``, ``x-request-id``)."""
    return {
        key.lower(): value if isinstance(value, str) else value.decode("latin-1")
        for key, value in context.invocation_metadata() or ()
    }


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _guard(
    method: Callable[[Any, Context], Awaitable[Resp]], request_type: type[Any], codecs: CodecPool
) -> Callable[[bytes, Context], Awaitable[Resp]]:
    """Parses the request as ``request_type`` (``bytes``: the method parses it), calls
    ``method``; pitstop errors end the call with their status code, anything else with
    INTERNAL."""

    async def guarded(data: bytes, context: Context) -> Resp:
        trailing: tuple[tuple[str, str], ...] = ()
        try:
            request = (
                data
                if request_type is bytes
                else await codecs.run(len(data), convert.parse, request_type, data)
            )
            return await method(request, context)
        except errors.PitstopError as error:
            code, message = code_of(error), str(error)
            if isinstance(error, errors.Overloaded):
                trailing = (("retry-after", str(max(1, round(error.retry_after)))),)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("gRPC call failed")
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {exc}"
        # Aborted outside the except block: the exception's traceback holds the frames of the
        # failed decode or inference, and with them its arrays, which must not stay alive while
        # the status is sent (concurrent failures would stack their allocations).
        await context.abort(code, message, trailing)

    return guarded


class GrpcServer:
    """A grpc.aio server for one :class:`GrpcApi`; create, start and stop it on one event loop."""

    def __init__(self, api: GrpcApi, max_message_bytes: int, share_port: bool = False) -> None:
        """``share_port``: the workers of one server listen on one port (SO_REUSEPORT; the
        kernel spreads connections over them)."""
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                # gRPC sets SO_REUSEPORT by default, which lets two servers bind one port
                # silently; a port in use must be an error, unless sharing it is the point.
                ("grpc.so_reuseport", int(share_port)),
            ]
        )
        self._server.add_generic_rpc_handlers((api.handler(),))

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 picks a free port); returns the port bound."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot listen on {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"gRPC cannot listen on {address}")
        await self._server.start()
        return bound

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls; give calls in flight ``grace_s`` seconds, then cancel them."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.stop(grace_s)
