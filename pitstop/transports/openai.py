"""OpenAI-compatible embeddings over HTTP: ``POST /v1/embeddings`` and ``GET /v1/models``.

A thin edge like :mod:`pitstop.transports.rest`: it translates an OpenAI request into a V2
inference request for the DataPlane and the answer back. ``model`` is a model name (its
``production`` alias), ``name@alias`` or ``name@3``; the model must take one BYTES input and
produce an FP32 ``[n, dim]`` output (``embedding``, or its first such output), as every
``embeddings`` package does. Concurrent requests are batched by the version's batcher like any
other traffic.

Request fields: ``input`` (a string or a list of up to :data:`MAX_INPUTS` non-empty strings;
token arrays are refused), ``model``, ``encoding_format`` (``float``, default, or ``base64``:
little-endian float32 bytes, what the official client asks for), ``dimensions`` (only the model's
own), ``user`` (ignored). ``usage.prompt_tokens`` counts the tokens the model saw; the number of
inputs truncated to the model's maximum length is in the ``pitstop-truncated`` header.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the status
codes of :data:`pitstop.transports.rest.STATUS_BY_ERROR`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop import errors
from pitstop.engine import Engine
from pitstop.protocol.reference import parse_ref
from pitstop.protocol.tensor import InferRequest, TensorSpec
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.transports.body import read_json_object
from pitstop.transports.headers import (
    DIGEST_HEADER,
    PREDICTION_HEADER,
    TRUNCATED_HEADER,
    VERSION_HEADER,
    header_safe,
)
from pitstop.transports.kit import Endpoint, guarded, principal_of, status_of

MAX_INPUTS: Final = 2048
"""OpenAI's own limit of inputs per request."""
ENCODINGS: Final = ("float", "base64")

_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    501: "invalid_request_error",
}
_CODES: Final[dict[int, str]] = {
    404: "model_not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    503: "model_not_ready",
    504: "timeout",
}


class BadField(errors.InvalidInput):
    """An OpenAI request field is missing or wrong; ``param`` names it for the client."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def error_response(error: errors.PitstopError) -> JSONResponse:
    status = status_of(error)
    body = {
        "message": str(error),
        "type": _TYPES.get(status, "server_error"),
        "param": error.param if isinstance(error, BadField) else None,
        "code": _CODES.get(status),
    }
    headers = {}
    if isinstance(error, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="pitstop"'
    if isinstance(error, errors.Overloaded):
        headers["Retry-After"] = error.retry_after_header
    return JSONResponse({"error": body}, status_code=status, headers=headers)


class OpenAIApi:
    """The OpenAI routes over a started Engine's DataPlane."""

    def __init__(self, engine: Engine, max_request_bytes: int, gate: Gate) -> None:
        self._engine = engine
        self._gate = gate
        self._dataplane = engine.dataplane
        self._max_bytes = max_request_bytes

    def routes(self) -> list[Route]:
        return [
            # The model is in the body: authenticated here, authorized (and rate-limited) on
            # the named model once the body is read.
            Route(
                "/v1/embeddings",
                self._guarded(self.embeddings, Action.INFER, model_in_body=True),
                methods=["POST"],
            ),
            Route("/v1/models", self._guarded(self.models, Action.DESCRIBE), methods=["GET"]),
        ]

    def _guarded(
        self, endpoint: Endpoint, action: Action, *, model_in_body: bool = False
    ) -> Endpoint:
        return guarded(
            endpoint, self._engine, self._gate, action, on_error=error_response,
            model_in_body=model_in_body,
        )  # fmt: skip

    async def models(self, request: Request) -> Response:
        """The ready models the caller may embed with (an ``infer:fraud*`` token sees only
        those)."""
        caller = principal_of(request)
        names = sorted(
            name
            for name in {row.name for row in self._dataplane.repository_index(ready_only=True)}
            if self._gate.permits(caller, Action.INFER, name)
        )
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "pitstop"} for n in names]
        return JSONResponse({"object": "list", "data": data})

    async def embeddings(self, request: Request) -> Response:
        body = await self._read_json(request)
        target = _field(body, "model", str)
        model, _, ref = target.partition("@")
        self._gate.allow(principal_of(request), Action.INFER, model)
        version = parse_ref(ref)
        texts = _texts(body.get("input"))
        encoding = body.get("encoding_format") or "float"
        if encoding not in ENCODINGS:
            raise BadField(f"encoding_format must be one of {list(ENCODINGS)}", "encoding_format")

        dataplane = self._dataplane
        metadata = dataplane.model_metadata(model, version)
        text_input, output = _embedding_interface(target, metadata.inputs, metadata.outputs)
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != output.shape[-1]:
            raise BadField(
                f"model {target!r} produces {output.shape[-1]} dimensions; it cannot give "
                f"{dimensions!r}",
                "dimensions",
            )
        array = np.array([text.encode("utf-8") for text in texts], dtype=object)
        shape = (len(texts),) + (1,) * (len(text_input.shape) - 1)
        served = await dataplane.infer(
            model,
            version,
            InferRequest(
                inputs={text_input.name: array.reshape(shape)},
                input_datatypes={text_input.name: "BYTES"},
            ),
            transport="openai",
            principal=principal_of(request).name,
        )
        vectors = np.asarray(served.response.outputs[output.name], dtype="<f4")
        parameters = served.response.parameters
        tokens = int(parameters.get("tokens", 0))
        data = [
            {"object": "embedding", "index": index, "embedding": _encode(vector, encoding)}
            for index, vector in enumerate(vectors)
        ]
        headers = {
            VERSION_HEADER: str(served.version),
            DIGEST_HEADER: served.digest,
            **({PREDICTION_HEADER: p} if (p := header_safe(served.response.id)) else {}),
            TRUNCATED_HEADER: str(int(parameters.get("truncated", 0))),
        }
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": target,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers=headers,
        )

    async def _read_json(self, request: Request) -> dict[str, Any]:
        return await read_json_object(request, self._max_bytes)


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or not value:
        raise BadField(f"{name!r} is required: a non-empty {kind.__name__}", name)
    return value


def _texts(value: object) -> list[str]:
    """The texts of ``input``: a string or a list of strings, each non-empty."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise BadField("'input' must be a string or a list of strings", "input")
    if not value:
        raise BadField("'input' is an empty list: send at least one text", "input")
    if len(value) > MAX_INPUTS:
        raise BadField(f"'input' has {len(value)} items; at most {MAX_INPUTS} per request", "input")
    for index, item in enumerate(value):
        if isinstance(item, int | list):
            raise BadField(
                "'input' holds token ids; this server embeds text only: send strings", "input"
            )
        if not isinstance(item, str):
            raise BadField(f"'input'[{index}] must be a string", "input")
        if not item:
            raise BadField(f"'input'[{index}] is an empty string", "input")
    return value


def _embedding_interface(
    target: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> tuple[TensorSpec, TensorSpec]:
    """The model's text input and embedding output; :class:`BadField` when it has none."""
    texts = [spec for spec in inputs if spec.datatype == "BYTES"]
    vectors = [spec for spec in outputs if spec.datatype == "FP32" and len(spec.shape) == 2]
    named = [spec for spec in vectors if spec.name == "embedding"]
    if len(inputs) != 1 or not texts or not vectors:
        raise BadField(
            f"model {target!r} is not an embedding model (one BYTES input, an FP32 [n, dim] "
            "output)",
            "model",
        )
    return texts[0], (named or vectors)[0]


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    values: list[float] = vector.tolist()
    return values
