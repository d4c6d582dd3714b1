"""Other servers' scoring protocols over HTTP, for the clients teams already have:

- MLflow's scoring server: ``POST /invocations`` (the model of ``PITSTOP_DEFAULT_MODEL``),
  ``POST /v2/models/{m}[/versions/{v}]/invocations``, ``GET /ping``, ``GET /health``,
  ``GET /version``; JSON (``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs``) or CSV in, ``{"predictions": ...}`` out, errors as
  ``{"error_code": ..., "message": ...}``.
- KServe V1 / TF Serving REST: ``POST /v1/models/{m}:predict`` (``instances`` → ``predictions``,
  ``inputs`` → ``outputs``) and ``GET /v1/models/{m}``.

Bodies become tensors in :mod:`pitstop.protocol.scoring`; the request is then served by the
DataPlane like any other (traffic policy, batching, metrics under transport ``mlflow`` / ``v1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pitstop import errors
from pitstop.engine import Engine
from pitstop.protocol.reference import VersionRef, parse_ref
from pitstop.protocol.scoring import (
    csv_inputs,
    mlflow_inputs,
    mlflow_predictions,
    v1_inputs,
    v1_predictions,
)
from pitstop.protocol.tensor import InferRequest
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.serving.dataplane import Served
from pitstop.transports.body import read_body
from pitstop.transports.codec_pool import CodecPool
from pitstop.transports.headers import (
    DIGEST_HEADER,
    PREDICTION_HEADER,
    VERSION_HEADER,
    header_safe,
)
from pitstop.transports.kit import Endpoint, error_body, guarded, principal_of, status_of

MLFLOW_CODES: Final[dict[int, str]] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    501: "NOT_IMPLEMENTED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""HTTP status → the ``error_code`` MLflow's REST errors carry (INTERNAL_ERROR otherwise)."""

CONTENT_TYPES: Final = ("application/json", "text/csv")


def mlflow_error(error: errors.PitstopError) -> Response:
    """A pitstop error in MLflow's shape, with the same status and headers as elsewhere."""
    status = status_of(error)
    _, headers = error_body(error)
    body = {"error_code": MLFLOW_CODES.get(status, "INTERNAL_ERROR"), "message": str(error)}
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers={name.decode(): value.decode() for name, value in headers},
    )


class ScoringApi:
    """MLflow's and KServe V1's routes over a started Engine's DataPlane."""

    def __init__(
        self,
        engine: Engine,
        max_request_bytes: int,
        gate: Gate,
        codecs: CodecPool,
        default_model: str | None,
        server_version: str,
    ) -> None:
        self._engine = engine
        self._dataplane = engine.dataplane
        self._max_bytes = max_request_bytes
        self._gate = gate
        self._codecs = codecs
        self._default_model = default_model
        self._server_version = server_version

    def routes(self) -> list[Route]:
        infer, describe, health = Action.INFER, Action.DESCRIBE, Action.HEALTH
        model, version = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
        return [
            # The root route's model is the setting's: authenticated here, allowed once known.
            Route("/invocations", self._mlflow(self.invocations, infer, True), methods=["POST"]),
            Route(model + "/invocations", self._mlflow(self.invocations, infer), methods=["POST"]),
            Route(
                version + "/invocations", self._mlflow(self.invocations, infer), methods=["POST"]
            ),
            Route("/ping", self._mlflow(self.ping, health), methods=["GET"]),
            Route("/health", self._mlflow(self.ping, health), methods=["GET"]),
            Route("/version", self._mlflow(self.version, describe), methods=["GET"]),
            Route("/v1/models/{model}:predict", self._v1(self.predict, infer), methods=["POST"]),
            Route("/v1/models/{model}", self._v1(self.model, describe), methods=["GET"]),
        ]

    def _mlflow(self, endpoint: Endpoint, action: Action, model_in_body: bool = False) -> Endpoint:
        return guarded(
            endpoint, self._engine, self._gate, action, on_error=mlflow_error,
            model_in_body=model_in_body,
        )  # fmt: skip

    def _v1(self, endpoint: Endpoint, action: Action) -> Endpoint:
        return guarded(endpoint, self._engine, self._gate, action)

    async def invocations(self, request: Request) -> Response:
        model = request.path_params.get("model")
        if model is None:
            model = self._default_model
            if model is None:
                raise errors.NotFound(
                    "POST /invocations serves the default model, and none is configured: set "
                    "PITSTOP_DEFAULT_MODEL, or use /v2/models/{model}/invocations"
                )
            self._gate.allow(principal_of(request), Action.INFER, model)
        version = parse_ref(request.path_params.get("version"))
        media = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if media.lower() not in CONTENT_TYPES:
            raise errors.UnsupportedMediaType(
                f"Content-Type {media!r} is not supported; send one of {', '.join(CONTENT_TYPES)}"
            )
        body = await read_body(request, self._max_bytes)
        signature = self._dataplane.signature(model, version)
        csv = media.lower() == "text/csv"

        def decode() -> dict[str, np.ndarray]:
            return csv_inputs(body, signature) if csv else mlflow_inputs(_json(body), signature)

        served = await self._serve(request, model, version, decode, len(body), "mlflow")
        encoded = await self._codecs.run(
            len(body),
            lambda: orjson.dumps(mlflow_predictions(served.response.outputs), option=_NUMPY),
        )
        return _answer(encoded, served)

    async def ping(self, _request: Request) -> Response:
        if not self._dataplane.ready():
            raise errors.Unavailable("the server is not ready: its models are not all loaded")
        return PlainTextResponse("\n")

    async def version(self, _request: Request) -> Response:
        return PlainTextResponse(self._server_version)

    async def predict(self, request: Request) -> Response:
        model = request.path_params["model"]
        body = await read_body(request, self._max_bytes)
        signature = self._dataplane.signature(model, None)
        columnar: list[bool] = []

        def decode() -> dict[str, np.ndarray]:
            tensors, is_columnar = v1_inputs(_json(body), signature)
            columnar.append(is_columnar)
            return tensors

        served = await self._serve(request, model, None, decode, len(body), "v1")
        encoded = await self._codecs.run(
            len(body),
            lambda: orjson.dumps(
                v1_predictions(served.response.outputs, columnar[0]), option=_NUMPY
            ),
        )
        return _answer(encoded, served)

    async def model(self, request: Request) -> Response:
        """KServe V1's model status; also an OpenAI model object (``id``, ``object``), so
        either client reads it."""
        model = request.path_params["model"]
        ready = self._dataplane.model_ready(model, None)
        body: dict[str, Any] = {
            "name": model,
            "ready": ready,
            "id": model,
            "object": "model",
            "created": 0,
            "owned_by": "pitstop",
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _serve(
        self,
        request: Request,
        model: str,
        version: VersionRef,
        decode: Callable[[], dict[str, np.ndarray]],
        size: int,
        transport: str,
    ) -> Served:
        """``decode()`` (off the event loop when the body of ``size`` bytes is large), then the
        DataPlane."""
        principal = principal_of(request).name
        try:
            inputs = await self._codecs.run(size, decode)
        except errors.InvalidInput as error:  # counted like the DataPlane's own refusals
            self._dataplane.rejected(model, transport, error, principal)
            raise
        return await self._dataplane.infer(
            model, version, InferRequest(inputs=inputs), metadata=request.headers,
            transport=transport, principal=principal,
        )  # fmt: skip


_NUMPY: Final = orjson.OPT_SERIALIZE_NUMPY


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidInput(f"the body is not valid JSON: {exc}") from exc


def _answer(content: bytes, served: Served) -> Response:
    return Response(
        content,
        media_type="application/json",
        headers={
            VERSION_HEADER: str(served.version),
            DIGEST_HEADER: served.digest,
            **({PREDICTION_HEADER: p} if (p := header_safe(served.response.id)) else {}),
        },
    )
