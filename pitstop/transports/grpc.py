"""gRPC transport: ``inference.GRPCInferenceService`` (KServe V2 + Triton extensions) on grpc.aio.

Every RPC converts (:mod:`pitstop.transports.grpc_convert`), calls the DataPlane, converts back:
the same request path as REST. Errors map to status codes in one table, :data:`CODE_BY_ERROR`.
The server runs on the event loop of the HTTP server and is started and stopped by its lifespan.

Access: every method in the route table names its :class:`Action`; the guard authenticates the
call (``authorization`` metadata, the verified client certificate) before the request is parsed
and authorizes it on the request's model once parsed, through the same
:class:`~pitstop.security.gate.Gate` as HTTP. ModelInfer and ModelStreamInfer learn their model
while decoding, so they ask the gate with it (:data:`CALLER` holds who called).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final, TypeVar

import grpc
import grpc.aio

from pitstop import errors
from pitstop.engine import Engine
from pitstop.protocol.binary_codec import decode_body
from pitstop.protocol.reference import parse_ref
from pitstop.security.authorization import ANONYMOUS, Action, Principal
from pitstop.security.gate import Credentials, Gate
from pitstop.serving.parameters import deadline_of
from pitstop.serving.repository import check_repository_parameters
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

CALLER: ContextVar[Principal] = ContextVar("pitstop_grpc_caller", default=ANONYMOUS)
"""Who made the current call: set by the guard before a method runs (each call is a task)."""

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

    def __init__(
        self, engine: Engine, gate: Gate, codecs: CodecPool, typed_outputs: bool = False
    ) -> None:
        """``typed_outputs``: answer a request sent with typed contents in kind (the setting
        ``grpc_typed_outputs``); otherwise every response is raw, as Triton's are."""
        self._dataplane = engine.dataplane
        self._gate = gate
        self._codecs = codecs
        self._typed_outputs = typed_outputs

    def handler(self) -> grpc.GenericRpcHandler:
        """The route table: RPC name → method, its message types, its action and the request
        field naming its model (None: a call about no model, or one that finds its model while
        decoding and asks the gate itself)."""
        health, describe, infer = Action.HEALTH, Action.DESCRIBE, Action.INFER
        observe, admin = Action.OBSERVE, Action.ADMIN
        unary: dict[str, tuple[Callable[[Any, Context], Awaitable[Any]], Any, Any, Action, str | None]] = {  # noqa: E501
            "ServerLive": (
                self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse, health, None
            ),
            "ServerReady": (
                self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse, health, None
            ),
            "ModelReady": (
                self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse, describe, "name"
            ),
            "ServerMetadata": (
                self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse,
                describe, None,
            ),
            "ModelMetadata": (
                self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse,
                describe, "name",
            ),
            "ModelConfig": (
                self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse, describe,
                "name",
            ),
            "ModelInfer": (self.model_infer, bytes, pb.ModelInferResponse, infer, None),
            "ModelStatistics": (
                self.model_statistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse,
                observe, "name",
            ),
            "RepositoryIndex": (
                self.repository_index, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse,
                observe, None,
            ),
            "RepositoryModelLoad": (
                self.repository_model_load, pb.RepositoryModelLoadRequest,
                pb.RepositoryModelLoadResponse, admin, "model_name",
            ),
            "RepositoryModelUnload": (
                self.repository_model_unload, pb.RepositoryModelUnloadRequest,
                pb.RepositoryModelUnloadResponse, admin, "model_name",
            ),
        }  # fmt: skip
        # Requests arrive as bytes and are parsed here, not by grpc: a message that does not
        # parse is the client's error (INVALID_ARGUMENT naming the message), where grpc's own
        # deserializer answers INTERNAL; and a large one is parsed off the event loop.
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            name: grpc.unary_unary_rpc_method_handler(
                _guard(method, request, self._codecs, self._gate, action, field),
                response_serializer=response.SerializeToString,
            )
            for name, (method, request, response, action, field) in unary.items()
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
        response, version, digest = await self._infer(
            data, CALLER.get(), c.time_remaining(), metadata
        )
        c.set_trailing_metadata(((VERSION_HEADER, version), (DIGEST_HEADER, digest)))
        return response

    async def _infer(
        self,
        data: bytes,
        caller: Principal,
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
        self._gate.allow(caller, Action.INFER, model)
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
            typed = convert.typed_outputs(request.parameters, self._typed_outputs and not raw)
        except errors.InvalidInput as error:  # counted like the DataPlane's own refusals
            self._dataplane.rejected(model, "grpc", error, caller.name)
            raise
        if remaining_s is not None:
            # The client's gRPC deadline bounds the request too: work it gave up on is never
            # started (the earlier of it and the request's own ``timeout`` parameter).
            client = now + remaining_s
            deadline = client if deadline is None else min(deadline, client)
        served = await self._dataplane.infer(
            model, version, request, metadata=metadata, deadline=deadline, transport="grpc",
            principal=caller.name,
        )  # fmt: skip
        response = await self._codecs.run(
            outputs_size(served.response.outputs),
            convert.encode_infer_response,
            served.response,
            raw=not typed,
        )
        return response, str(served.version), served.digest

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], c: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One response per request, in request order; a failed request yields its
        ``error_message`` and the stream goes on (Triton's behaviour). The call is
        authenticated when it opens (UNAUTHENTICATED ends it) and again for each request, so a
        token revoked or expired meanwhile stops working on an open stream too; each request is
        authorized on its model (a denied one answers its ``error_message``)."""
        credentials = credentials_of(c)
        try:
            self._gate.authenticate(credentials, Action.INFER)
        except errors.PitstopError as error:
            await c.abort(code_of(error), str(error))
            return
        # The semaphore bounds the requests in flight; the queue keeps their order and never
        # blocks, so the reader can always signal the end (None) and never strands a task.
        slots = asyncio.Semaphore(STREAM_WINDOW)
        window: asyncio.Queue[asyncio.Task[pb.ModelStreamInferResponse] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    window.put_nowait(asyncio.ensure_future(self._stream_one(request, credentials)))
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

    async def _stream_one(
        self, data: bytes, credentials: Credentials
    ) -> pb.ModelStreamInferResponse:
        try:
            caller = self._gate.authenticate(credentials, Action.INFER)
            response, _, _ = await self._infer(data, caller)
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
        self, r: pb.RepositoryModelLoadRequest, _c: Context
    ) -> pb.RepositoryModelLoadResponse:
        check_repository_parameters("load", convert.decode_parameters(r.parameters))
        await self._dataplane.load_model(r.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, r: pb.RepositoryModelUnloadRequest, _c: Context
    ) -> pb.RepositoryModelUnloadResponse:
        check_repository_parameters("unload", convert.decode_parameters(r.parameters))
        await self._dataplane.unload_model(r.model_name)
        return pb.RepositoryModelUnloadResponse()


def _metadata(context: Context) -> dict[str, str]:
    """Invocation metadata as lower-cased text headers (``traceparent``, ``x-request-id``)."""
    return {
        key.lower(): value if isinstance(value, str) else value.decode("latin-1")
        for key, value in context.invocation_metadata() or ()
    }


def credentials_of(context: Context) -> Credentials:
    """The call's ``authorization`` metadata and, over mutual TLS, the verified client
    certificate's common name (gRPC's auth context holds it only once verified)."""
    authorization: str | None = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            authorization = value if isinstance(value, str) else value.decode("latin-1")
            break
    names = list(context.auth_context().get("x509_common_name") or ())
    common_name = names[0].decode("utf-8", "replace") if names else None
    return Credentials(authorization, common_name)


def _guard(
    method: Callable[[Any, Context], Awaitable[Resp]],
    request_type: type[Any],
    codecs: CodecPool,
    gate: Gate,
    action: Action,
    model_field: str | None,
) -> Callable[[bytes, Context], Awaitable[Resp]]:
    """Authenticates the call for ``action``, parses the request as ``request_type``
    (``bytes``: the method parses it), authorizes it on the model its ``model_field`` names,
    calls ``method``; pitstop errors end the call with their status code, anything else with
    INTERNAL."""

    async def guarded(data: bytes, context: Context) -> Resp:
        trailing: tuple[tuple[str, str], ...] = ()
        try:
            caller = gate.authenticate(credentials_of(context), action)
            request = (
                data
                if request_type is bytes
                else await codecs.run(len(data), convert.parse, request_type, data)
            )
            if request_type is not bytes:
                model = (getattr(request, model_field) or None) if model_field else None
                caller = gate.allow(caller, action, model)
            CALLER.set(caller)
            return await method(request, context)
        except errors.PitstopError as error:
            code, message = code_of(error), str(error)
            if isinstance(error, errors.Overloaded):
                trailing = (("retry-after", error.retry_after_header),)
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
