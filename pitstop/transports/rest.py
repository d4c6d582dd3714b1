"""REST transport: the Open Inference Protocol (KServe V2) over HTTP, on Starlette.

Every route decodes, calls the DataPlane, encodes; errors and draining are answered by
:func:`~pitstop.transports.kit.guarded`, like every HTTP route.
Inference, the hot path, is answered by :meth:`RestApi.front` in front of Starlette: straight
ASGI, without the router, middleware stack and Request/Response objects, which cost about as
much per request as the whole DataPlane does.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstop import errors
from pitstop.engine import Engine
from pitstop.protocol.binary_codec import HEADER_LENGTH, encode_body
from pitstop.protocol.reference import VersionRef, parse_ref
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.serving.parameters import deadline_of
from pitstop.serving.repository import check_repository_parameters
from pitstop.transports.body import read_body, read_json, read_stream
from pitstop.transports.codec_pool import CodecPool, outputs_size
from pitstop.transports.headers import (
    DIGEST_HEADER,
    FALLBACK_HEADER,
    PREDICTION_HEADER,
    VERSION_HEADER,
    header_safe,
)
from pitstop.transports.kit import (
    ClientGone,
    Endpoint,
    credentials_of,
    error_body,
    guarded,
    principal_of,
    status_of,
)
from pitstop.transports.shared_tensors import SharedTensors

_RAW_VERSION: Final = VERSION_HEADER.encode()
_RAW_DIGEST: Final = DIGEST_HEADER.encode()
_RAW_FALLBACK: Final = FALLBACK_HEADER.encode()
_RAW_PREDICTION: Final = PREDICTION_HEADER.encode()
_RAW_LENGTH: Final = HEADER_LENGTH.lower().encode()
"""The header names as raw ASGI headers (lower-case bytes), built once."""

log = logging.getLogger(__name__)

INFER_PATH: Final = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
"""The two inference routes, as Starlette's ``{model}`` / ``{version}`` parameters match."""


class RestApi:
    """The V2 routes over a started Engine's DataPlane."""

    def __init__(
        self,
        engine: Engine,
        max_request_bytes: int,
        gate: Gate,
        codecs: CodecPool,
        shared: SharedTensors,
        insecure: str | None = None,
    ) -> None:
        """``insecure``: why this server runs without TLS and inference authentication on a
        non-loopback address (``PITSTOP_INSECURE``), reported in the server metadata."""
        self._engine = engine
        self._dataplane = engine.dataplane
        self._max_bytes = max_request_bytes
        self._gate = gate
        self._codecs = codecs
        self._shared = shared
        self._insecure = insecure

    def routes(self) -> list[Route]:
        model = "/v2/models/{model}"
        version = "/v2/models/{model}/versions/{version}"
        # Inference first: Starlette tries routes in order, and infer is the hot path.
        infer, describe, observe = Action.INFER, Action.DESCRIBE, Action.OBSERVE
        health, admin = Action.HEALTH, Action.ADMIN
        return [
            Route(model + "/infer", self._guard(self.infer, infer), methods=["POST"]),
            Route(version + "/infer", self._guard(self.infer, infer), methods=["POST"]),
            Route("/v2/models/stats", self._guard(self.statistics, observe), methods=["GET"]),
            Route(model + "/stats", self._guard(self.statistics, observe), methods=["GET"]),
            Route(version + "/stats", self._guard(self.statistics, observe), methods=["GET"]),
            Route(
                "/v2/repository/index",
                self._guard(self.repository_index, observe),
                methods=["POST"],
            ),
            Route(
                "/v2/repository/models/{model}/load",
                self._guard(self.load, admin),
                methods=["POST"],
            ),
            Route(
                "/v2/repository/models/{model}/unload",
                self._guard(self.unload, admin),
                methods=["POST"],
            ),
            Route("/v2/health/live", self._guard(self.live, health), methods=["GET"]),
            Route("/v2/health/ready", self._guard(self.ready, health), methods=["GET"]),
            Route("/v2", self._guard(self.server_metadata, describe), methods=["GET"]),
            Route("/v2/", self._guard(self.server_metadata, describe), methods=["GET"]),
            Route(model, self._guard(self.model_metadata, describe), methods=["GET"]),
            Route(version, self._guard(self.model_metadata, describe), methods=["GET"]),
            Route(model + "/ready", self._guard(self.model_ready, describe), methods=["GET"]),
            Route(version + "/ready", self._guard(self.model_ready, describe), methods=["GET"]),
            Route(model + "/config", self._guard(self.model_config, describe), methods=["GET"]),
            Route(version + "/config", self._guard(self.model_config, describe), methods=["GET"]),
        ]

    def front(self, app: ASGIApp) -> ASGIApp:
        """The ASGI app to serve: ``POST .../infer`` answered here directly, everything else
        (and every other scope, lifespan included) by ``app``. Both paths share :meth:`_infer`;
        the Starlette infer routes stay so that other methods get 405."""

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                match = INFER_PATH.fullmatch(scope["path"])
                if match is not None:
                    await self._infer_asgi(scope, receive, send, match[1], parse_ref(match[2]))
                    return
            await app(scope, receive, send)

        return serve

    async def _infer_asgi(
        self, scope: Scope, receive: Receive, send: Send, model: str, version: VersionRef
    ) -> None:
        headers = Headers(scope=scope)
        status = 200
        try:
            caller = self._gate.admit(credentials_of(scope), Action.INFER, model)
            content, extra = await self._infer(model, version, headers, receive, caller.name)
        except ClientGone:
            return
        except errors.PitstopError as error:
            status = status_of(error)
            content, extra = error_body(error)
        except Exception:
            log.exception("inference request for %r failed unexpectedly", model)
            status = 500
            content = orjson.dumps({"error": "internal server error"})
            extra = [(b"content-type", b"application/json")]
        if self._engine.draining:
            extra.append((b"connection", b"close"))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(content)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _infer(
        self,
        model: str,
        version: VersionRef,
        headers: Headers,
        receive: Receive,
        principal: str,
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        try:
            body = await self._receive_body(headers, receive)
            decoded = await self._codecs.decode_body(body, headers.get(HEADER_LENGTH))
            del body  # the decoded arrays are all the request needs from here on
            decoded = self._shared.read_inputs(decoded)
            self._shared.check_outputs(decoded.outputs)
            deadline = deadline_of(decoded.parameters, time.monotonic())
        except errors.InvalidInput as error:  # counted like the DataPlane's own refusals
            self._dataplane.rejected(model, "rest", error, principal)
            raise
        served = await self._dataplane.infer(
            model, version, decoded, metadata=headers, deadline=deadline, transport="rest",
            principal=principal,
        )  # fmt: skip
        response = self._shared.write_outputs(served.response, decoded.outputs)
        encoded = await self._codecs.run(
            outputs_size(response.outputs), encode_body, response, decoded.parameters
        )
        extra = [
            (b"content-type", encoded.media_type.encode()),
            (_RAW_VERSION, str(served.version).encode()),
            (_RAW_DIGEST, served.digest.encode()),
        ]
        if served.fallback is not None:
            extra.append((_RAW_FALLBACK, served.fallback.encode()))
        prediction = header_safe(served.response.id)
        if prediction is not None:
            extra.append((_RAW_PREDICTION, prediction.encode()))
        if encoded.json_length is not None:
            extra.append((_RAW_LENGTH, str(encoded.json_length).encode()))
        return encoded.content, extra

    async def _receive_body(self, headers: Headers, receive: Receive) -> bytes:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        return await read_stream(headers.get("content-length"), chunks(), self._max_bytes)

    def _guard(self, endpoint: Endpoint, action: Action) -> Endpoint:
        return guarded(endpoint, self._engine, self._gate, action)

    async def live(self, _request: Request) -> Response:
        registry = self._engine.manager.contact.to_json()
        return JSONResponse({"live": self._dataplane.live(), "registry": registry})

    async def ready(self, _request: Request) -> Response:
        """Ready once production versions serve; the registry's reach is reported, never
        required (a replica that has loaded what it serves stays ready through an outage)."""
        ready = self._dataplane.ready()
        registry = self._engine.manager.contact.to_json()
        return JSONResponse(
            {"ready": ready, "registry": registry}, status_code=200 if ready else 503
        )

    async def server_metadata(self, _request: Request) -> Response:
        info = self._dataplane.info
        body: dict[str, Any] = {
            "name": info.name,
            "version": info.version,
            "extensions": list(info.extensions),
        }
        if self._insecure:
            body["pitstop_insecure"] = self._insecure
        return JSONResponse(body)

    async def model_metadata(self, request: Request) -> Response:
        model, version = _target(request)
        await self._dataplane.prepare(model, version)
        metadata = self._dataplane.model_metadata(model, version)
        return JSONResponse(metadata.to_json())

    async def model_ready(self, request: Request) -> Response:
        model, version = _target(request)
        ready = self._dataplane.model_ready(model, version)
        return JSONResponse({"name": model, "ready": ready}, status_code=200 if ready else 503)

    async def model_config(self, request: Request) -> Response:
        model, version = _target(request)
        await self._dataplane.prepare(model, version)
        return JSONResponse(self._dataplane.model_config(model, version).to_json())

    async def infer(self, request: Request) -> Response:
        """JSON, or JSON plus binary tensors (the binary tensor extension) both ways. Served by
        :meth:`front` in the server; this route is what an un-fronted app answers with."""
        model, version = _target(request)
        content, extra = await self._infer(
            model, version, request.headers, request.receive, principal_of(request).name
        )
        return Response(content, headers={k.decode(): v.decode() for k, v in extra})

    async def statistics(self, request: Request) -> Response:
        params = request.path_params
        rows = self._dataplane.model_statistics(
            params.get("model"), parse_ref(params.get("version"))
        )
        return JSONResponse({"model_stats": [stats.to_json() for stats in rows]})

    async def repository_index(self, request: Request) -> Response:
        body = await self._read_json(request, optional=True)
        ready_only = isinstance(body, dict) and body.get("ready") is True
        return JSONResponse(
            [entry.to_json() for entry in self._dataplane.repository_index(ready_only)]
        )

    async def load(self, request: Request) -> Response:
        check_repository_parameters("load", await self._repository_parameters(request))
        await self._dataplane.load_model(request.path_params["model"])
        return JSONResponse({})

    async def unload(self, request: Request) -> Response:
        check_repository_parameters("unload", await self._repository_parameters(request))
        await self._dataplane.unload_model(request.path_params["model"])
        return JSONResponse({})

    async def _repository_parameters(self, request: Request) -> dict[str, Any]:
        """The ``parameters`` object of a repository load or unload body (optional)."""
        body = await self._read_json(request, optional=True)
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise errors.InvalidInput("request body must be a JSON object")
        unknown = sorted(set(body) - {"parameters"})
        if unknown:
            raise errors.InvalidInput(f"{unknown[0]!r}: not a field of a repository request")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise errors.InvalidInput("parameters must be a JSON object")
        return parameters

    async def _read_json(self, request: Request, optional: bool = False) -> Any:
        return await read_json(request, self._max_bytes, optional=optional)

    async def _read_body(self, request: Request) -> bytes:
        return await read_body(request, self._max_bytes)


def _target(request: Request) -> tuple[str, VersionRef]:
    params = request.path_params
    return params["model"], parse_ref(params.get("version"))
