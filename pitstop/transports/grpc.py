"""gRPC transport: ``inference.GRPCInferenceService`` (KServe V2 + Triton extensions) on grpc.aio.

Every RPC converts (:mod:`pitstop.transports.grpc_convert`), calls the DataPlane, converts back:
the same request path as REST. Errors map to status codes in one table,
``grpc_context.CODE_BY_ERROR``.
The server runs on the event loop of the HTTP server and is started and stopped by its lifespan.

Access: every method in the route table names its :class:`Action`; the guard authenticates the
call (``authorization`` metadata, the verified client certificate) before the request is parsed
and authorizes it on the request's model once parsed, through the same
:class:`~pitstop.security.gate.Gate` as HTTP. ModelInfer and ModelStreamInfer
(``transports/grpc_inference.py``) learn their model while decoding, so they ask the gate with
it (``grpc_context.CALLER`` holds who called).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc
import grpc.aio

from pitstop import errors
from pitstop.engine import Engine
from pitstop.protocol.reference import parse_ref
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.serving.feedback import parse_items
from pitstop.serving.repository import check_repository_parameters
from pitstop.transports import grpc_convert as convert
from pitstop.transports.codec_pool import CodecPool
from pitstop.transports.grpc_context import CALLER, Context, code_of, credentials_of
from pitstop.transports.grpc_inference import GrpcInference
from pitstop.transports.proto import feedback_pb2 as fb
from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.shared_memory_rpc import SharedMemoryRpc
from pitstop.transports.shared_tensors import SharedTensors

log = logging.getLogger(__name__)

SERVICE: Final = "inference.GRPCInferenceService"
FEEDBACK_SERVICE: Final = "pitstop.Feedback"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class GrpcApi:
    """The V2 RPCs over a started Engine's DataPlane."""

    def __init__(
        self,
        engine: Engine,
        gate: Gate,
        codecs: CodecPool,
        shared: SharedTensors,
        typed_outputs: bool = False,
    ) -> None:
        """``typed_outputs``: answer a request sent with typed contents in kind (the setting
        ``grpc_typed_outputs``); otherwise every response is raw, as Triton's are."""
        self._engine = engine
        self._dataplane = engine.dataplane
        self._gate = gate
        self._codecs = codecs
        self._shared = shared
        self._inference = GrpcInference(engine.dataplane, gate, codecs, shared, typed_outputs)

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
            "ModelInfer": (self._inference.model_infer, bytes, pb.ModelInferResponse, infer, None),
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
            **SharedMemoryRpc(self._shared).routes(),
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
            self._inference.model_stream_infer,
            response_serializer=pb.ModelStreamInferResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def feedback_handler(self) -> grpc.GenericRpcHandler:
        """``pitstop.Feedback/ModelFeedback``: the infer scope on the named model."""
        method = _guard(
            self.model_feedback, fb.ModelFeedbackRequest, self._codecs, self._gate,
            Action.INFER, "model_name",
        )  # fmt: skip
        handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
            method, response_serializer=fb.ModelFeedbackResponse.SerializeToString
        )
        return grpc.method_handlers_generic_handler(FEEDBACK_SERVICE, {"ModelFeedback": handler})

    async def model_feedback(
        self, r: fb.ModelFeedbackRequest, _c: Context
    ) -> fb.ModelFeedbackResponse:
        """As ``POST /v2/models/{m}/feedback``: NOT_FOUND when none of the ids is known."""
        model = r.model_name
        self._dataplane.require_model(model)
        desk = self._engine.feedback
        try:
            items = parse_items({"feedback": [_item_json(item) for item in r.items]})
        except errors.InvalidInput:
            desk.rejected(model)
            raise
        receipt = await desk.submit(model, items)
        if not receipt.accepted and (receipt.unknown or receipt.expired):
            named = ", ".join(repr(i) for i in [*receipt.unknown_ids, *receipt.expired_ids][:5])
            raise errors.NotFound(
                f"no prediction of model {model!r} has these ids ({receipt.unknown} unknown, "
                f"{receipt.expired} expired): {named}"
            )
        return fb.ModelFeedbackResponse(
            accepted=receipt.accepted, replaced=receipt.replaced, unknown=receipt.unknown,
            expired=receipt.expired, unknown_ids=receipt.unknown_ids,
            expired_ids=receipt.expired_ids,
        )  # fmt: skip

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
        await self._dataplane.prepare(r.name, parse_ref(r.version))
        return convert.encode_model_metadata(
            self._dataplane.model_metadata(r.name, parse_ref(r.version))
        )

    async def model_config(self, r: pb.ModelConfigRequest, _c: Context) -> pb.ModelConfigResponse:
        await self._dataplane.prepare(r.name, parse_ref(r.version))
        return convert.encode_model_config(
            self._dataplane.model_config(r.name, parse_ref(r.version))
        )

    # -- inference ---------------------------------------------------------------------------

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


def _item_json(item: fb.FeedbackItem) -> dict[str, Any]:
    """A feedback item as the JSON form :func:`parse_items` checks."""
    body: dict[str, Any] = {"id": item.id}
    kind = item.WhichOneof("outcome")
    if kind is not None:
        body[kind] = getattr(item, kind)
    if item.at:
        body["at"] = item.at
    if item.row:
        body["row"] = item.row
    return body


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
