"""Inference over gRPC: ``ModelInfer`` and ``ModelStreamInfer``, for the route table in
``transports/grpc.py``.

A request is decoded once (large ones off the event loop), its shared-memory inputs read, and
served by the DataPlane; a stream serves up to ``STREAM_WINDOW`` requests at once and answers
in request order, any number of responses for a decoupled model (with Triton's
``triton_final_response``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from pitstop import errors
from pitstop.protocol.binary_codec import decode_body
from pitstop.protocol.reference import VersionRef, parse_ref
from pitstop.protocol.tensor import InferRequest, InferResponse
from pitstop.security.authorization import Action, Principal
from pitstop.security.gate import Credentials, Gate
from pitstop.serving.dataplane import DataPlane
from pitstop.serving.parameters import bool_parameter, deadline_of
from pitstop.transports import grpc_convert as convert
from pitstop.transports.codec_pool import CodecPool, outputs_size
from pitstop.transports.grpc_context import (
    CALLER,
    Context,
    code_of,
    credentials_of,
    metadata_of,
)
from pitstop.transports.headers import (
    DIGEST_HEADER,
    PREDICTION_HEADER,
    VERSION_HEADER,
    header_safe,
)
from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.shared_tensors import SharedTensors

log = logging.getLogger(__name__)

FINAL: Final = "triton_final_response"
"""The response parameter saying whether a stream response is the request's last."""
EMPTY_FINAL: Final = "triton_enable_empty_final_response"
"""The request parameter asking for an empty final response after a decoupled model's."""
STREAM_RESPONSES: Final = 16
"""Responses of one streamed request ready before its model waits for the writer."""

STREAM_WINDOW: Final = 64
"""Requests of one ModelStreamInfer call served concurrently; the stream stops reading beyond
that until the oldest response is sent (responses keep request order)."""


@dataclass(frozen=True, slots=True)
class _Asked:
    """A decoded ModelInferRequest and how to answer it."""

    model: str
    version: VersionRef
    request: InferRequest
    deadline: float | None
    typed: bool


_Streamed = tuple["asyncio.Task[None]", "asyncio.Queue[pb.ModelStreamInferResponse | None]"]


class GrpcInference:
    """``ModelInfer`` and ``ModelStreamInfer`` over a DataPlane."""

    def __init__(
        self,
        dataplane: DataPlane,
        gate: Gate,
        codecs: CodecPool,
        shared: SharedTensors,
        typed_outputs: bool,
    ) -> None:
        """``typed_outputs``: answer a request sent with typed contents in kind (the setting
        ``grpc_typed_outputs``); otherwise every response is raw, as Triton's are."""
        self._dataplane = dataplane
        self._gate = gate
        self._codecs = codecs
        self._shared = shared
        self._typed_outputs = typed_outputs

    async def model_infer(self, data: bytes, c: Context) -> pb.ModelInferResponse:
        """Trailing metadata names the version and digest that answered."""
        metadata = metadata_of(c) if self._dataplane.wants_metadata else None
        response, version, digest = await self._infer(
            data, CALLER.get(), c.time_remaining(), metadata
        )
        trailing = [(VERSION_HEADER, version), (DIGEST_HEADER, digest)]
        prediction = header_safe(response.id)
        if prediction is not None:
            trailing.append((PREDICTION_HEADER, prediction))
        c.set_trailing_metadata(tuple(trailing))
        return response

    async def _infer(
        self,
        data: bytes,
        caller: Principal,
        remaining_s: float | None = None,
        metadata: dict[str, str] | None = None,
    ) -> tuple[pb.ModelInferResponse, str, str]:
        """Decode, serve and encode one ModelInferRequest."""
        asked = await self._decode(data, caller, remaining_s)
        served = await self._dataplane.infer(
            asked.model, asked.version, asked.request, metadata=metadata,
            deadline=asked.deadline, transport="grpc", principal=caller.name,
        )  # fmt: skip
        return await self._encode(served.response, asked), str(served.version), served.digest

    async def _decode(self, data: bytes, caller: Principal, remaining_s: float | None) -> _Asked:
        """Parse and decode (both off the event loop when large) one ModelInferRequest."""
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
            request = self._shared.read_inputs(request)
            self._shared.check_outputs(request.outputs)
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
        return _Asked(model, version, request, deadline, typed)

    async def _encode(self, response: InferResponse, asked: _Asked) -> pb.ModelInferResponse:
        answer = self._shared.write_outputs(response, asked.request.outputs)
        return await self._codecs.run(
            outputs_size(answer.outputs), convert.encode_infer_response, answer,
            raw=not asked.typed,
        )  # fmt: skip

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], c: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request's responses, in request order: one for most models, any number for a
        decoupled one (each with ``triton_final_response``; false on a decoupled model's
        responses, then an empty final one when the request sets
        ``triton_enable_empty_final_response``). A failed request yields its
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
        # Up to STREAM_WINDOW requests are served at once, each into its own bounded queue
        # (a decoupled model's producer waits for the writer there); the window keeps their
        # order and never blocks, so the reader can always signal the end (None).
        slots = asyncio.Semaphore(STREAM_WINDOW)
        window: asyncio.Queue[_Streamed | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in requests:
                    await slots.acquire()
                    out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue(
                        STREAM_RESPONSES
                    )
                    task = asyncio.ensure_future(self._stream_one(request, credentials, out))
                    window.put_nowait((task, out))
            finally:
                window.put_nowait(None)

        reader = asyncio.ensure_future(read())
        entry: _Streamed | None = None
        try:
            while (entry := await window.get()) is not None:
                _, out = entry
                while (response := await out.get()) is not None:
                    yield response
                slots.release()
            await reader  # a failure to read the stream ends the call with it
        finally:
            reader.cancel()
            while not window.empty():
                left = window.get_nowait()
                if left is not None:
                    left[0].cancel()
            if entry is not None:
                entry[0].cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _stream_one(
        self,
        data: bytes,
        credentials: Credentials,
        out: asyncio.Queue[pb.ModelStreamInferResponse | None],
    ) -> None:
        """Serve one request of a stream into ``out``, ending with None."""
        try:
            caller = self._gate.authenticate(credentials, Action.INFER)
            asked = await self._decode(data, caller, None)
            empty_final = bool_parameter(asked.request.parameters, EMPTY_FINAL)
            count, decoupled, model_version = 0, False, ""
            async for served in self._dataplane.infer_stream(
                asked.model, asked.version, asked.request, deadline=asked.deadline,
                transport="grpc", principal=caller.name,
            ):  # fmt: skip
                count += 1
                decoupled, model_version = served.decoupled, str(served.version)
                response = await self._encode(served.response, asked)
                response.parameters[FINAL].bool_param = not decoupled
                await out.put(pb.ModelStreamInferResponse(infer_response=response))
            if (decoupled or count == 0) and empty_final:
                final = pb.ModelInferResponse(
                    model_name=asked.model, model_version=model_version, id=asked.request.id or ""
                )
                final.parameters[FINAL].bool_param = True
                await out.put(pb.ModelStreamInferResponse(infer_response=final))
        except errors.PitstopError as error:
            await out.put(pb.ModelStreamInferResponse(error_message=str(error)))
        except Exception as exc:
            log.exception("a ModelStreamInfer request failed")
            await out.put(pb.ModelStreamInferResponse(error_message=f"internal error: {exc}"))
        await out.put(None)
