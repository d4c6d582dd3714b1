"""Triton's generate extension over HTTP, the REST side of multi-response models:

    POST /v2/models/{m}[/versions/{v}]/generate          one response, as JSON
    POST /v2/models/{m}[/versions/{v}]/generate_stream   every response, as server-sent events

Bodies are :mod:`pitstop.protocol.generate`'s flat JSON. ``generate_stream`` answers
``text/event-stream``: one ``data: {json}`` event per response as the model gives it (a
decoupled model's many, any other model's one), then the stream ends. An error before the first
response is a normal JSON error with its status; one after it is a last event
``data: {"error": "..."}``. A client that disconnects stops the model: its generator is closed.
``generate`` serves any model whose request yields at most one response; a decoupled model
that gives more is refused after its second, naming ``generate_stream``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from pitstop import errors
from pitstop.engine import Engine
from pitstop.protocol.generate import generate_request, generate_response
from pitstop.protocol.reference import parse_ref
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.serving.dataplane import Served
from pitstop.serving.parameters import deadline_of
from pitstop.transports.body import read_json_object
from pitstop.transports.headers import (
    DIGEST_HEADER,
    PREDICTION_HEADER,
    VERSION_HEADER,
    header_safe,
)
from pitstop.transports.kit import guarded, principal_of

TRANSPORT = "generate"


class GenerateApi:
    """The generate routes over a started Engine's DataPlane."""

    def __init__(self, engine: Engine, max_request_bytes: int, gate: Gate) -> None:
        self._engine = engine
        self._dataplane = engine.dataplane
        self._max_bytes = max_request_bytes
        self._gate = gate

    def routes(self) -> list[Route]:
        routes = []
        for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            for path, endpoint in (("/generate", self.generate), ("/generate_stream", self.stream)):
                guard = guarded(endpoint, self._engine, self._gate, Action.INFER)
                routes.append(Route(base + path, guard, methods=["POST"]))
        return routes

    async def generate(self, request: Request) -> Response:
        responses = self._responses(request)
        try:
            first = await anext(responses, None)
            if first is not None and await anext(responses, None) is not None:
                raise errors.InvalidInput(
                    f"model {first.response.model_name!r} answered this request with more than "
                    "one response: use generate_stream"
                )
        finally:
            await responses.aclose()
        if first is None:  # a decoupled model may answer with no response at all
            model = request.path_params["model"]
            body: dict[str, Any] = {"model_name": model, "model_version": ""}
            return Response(orjson.dumps(body), media_type="application/json")
        return Response(
            orjson.dumps(generate_response(first.response)),
            media_type="application/json",
            headers=_served_headers(first),
        )

    async def stream(self, request: Request) -> Response:
        responses = self._responses(request)
        try:
            first = await anext(responses, None)  # errors so far get their own status
        except BaseException:
            await responses.aclose()
            raise
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        if first is not None:
            headers.update(_served_headers(first))

        async def events() -> AsyncIterator[bytes]:
            try:
                if first is None:
                    return
                yield _event(generate_response(first.response))
                async for served in responses:
                    yield _event(generate_response(served.response))
            except errors.PitstopError as error:
                yield _event({"error": str(error)})
            finally:
                await responses.aclose()

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def _responses(self, request: Request) -> AsyncGenerator[Served, None]:
        model = request.path_params["model"]
        version = parse_ref(request.path_params.get("version"))
        principal = principal_of(request).name
        body = await read_json_object(request, self._max_bytes)
        try:
            inputs = self._dataplane.model_metadata(model, version).inputs
            asked = generate_request(body, inputs)
            deadline = deadline_of(asked.parameters, time.monotonic())
        except errors.InvalidInput as error:  # counted like the DataPlane's own refusals
            self._dataplane.rejected(model, TRANSPORT, error, principal)
            raise
        stream = self._dataplane.infer_stream(
            model, version, asked, metadata=request.headers, deadline=deadline,
            transport=TRANSPORT, principal=principal,
        )  # fmt: skip
        try:
            async for served in stream:
                yield served
        finally:
            await stream.aclose()


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _served_headers(served: Served) -> dict[str, str]:
    headers = {VERSION_HEADER: str(served.version), DIGEST_HEADER: served.digest}
    prediction = header_safe(served.response.id)
    if prediction is not None:
        headers[PREDICTION_HEADER] = prediction
    return headers
