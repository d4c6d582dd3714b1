"""How every HTTP route answers: the error-to-status table, the JSON error body, Starlette's own
errors in the same shape, and :func:`guarded`, the wrapper every route of every HTTP API
(REST, admin, OpenAI, observability) is served through, so errors, authentication and draining
behave the same everywhere. gRPC has its own table (``grpc.CODE_BY_ERROR``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pitstop import errors
from pitstop.engine import Engine
from pitstop.security.token import Authenticator

Endpoint = Callable[[Request], Awaitable[Response]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived: nobody to answer."""


STATUS_BY_ERROR: Final[tuple[tuple[type[errors.PitstopError], int], ...]] = (
    (errors.PayloadTooLarge, 413),
    (errors.InvalidInput, 400),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unavailable, 503),
    (errors.Overloaded, 429),
    (errors.DeadlineExceeded, 504),
    (errors.Unsupported, 501),
    (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403),
    (errors.InternalError, 500),
)
"""Most specific first: the first class an error is an instance of decides its status."""


def status_of(error: errors.PitstopError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


def error_body(error: errors.PitstopError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The JSON body ``{"error": message}`` and its headers (Retry-After when overloaded), as
    raw ASGI headers."""
    headers = [(b"content-type", b"application/json")]
    if isinstance(error, errors.Overloaded):
        headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    return orjson.dumps({"error": str(error)}), headers


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, method not allowed) in the JSON error shape."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        allowed = headers.get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
    else:
        message = str(exc.detail)
    headers["content-type"] = "application/json"
    return Response(orjson.dumps({"error": message}), exc.status_code, headers)


async def internal_error(_request: Request, exc: Exception) -> Response:
    """A bug, in the JSON error shape; Starlette logs the exception after this answers."""
    return Response(
        orjson.dumps({"error": "internal server error"}),
        500,
        {"content-type": "application/json"},
    )


EXCEPTION_HANDLERS: Final = {HTTPException: http_error, Exception: internal_error}
"""What the Starlette app answers for errors no route handled: JSON like every other error."""


def error_response(error: errors.PitstopError) -> Response:
    content, headers = error_body(error)
    return Response(
        content,
        status_code=status_of(error),
        headers={name.decode(): value.decode() for name, value in headers},
    )


def guarded(
    endpoint: Endpoint,
    engine: Engine,
    *,
    scope: str | None = None,
    authenticator: Authenticator | None = None,
    on_error: Callable[[errors.PitstopError], Response] = error_response,
) -> Endpoint:
    """``endpoint`` answering pitstop errors with ``on_error`` (the JSON error body by
    default), after checking the bearer token for ``scope`` when one is given; while the
    Engine drains, every answer says ``Connection: close`` so clients reconnect elsewhere."""
    if scope is not None and authenticator is None:
        raise ValueError("a scope needs an authenticator")

    async def route(request: Request) -> Response:
        try:
            if scope is not None and authenticator is not None:
                authenticator.require(request.headers.get("authorization"), scope)
            response = await endpoint(request)
        except ClientGone:
            response = Response(status_code=499)  # nobody reads it; uvicorn drops it
        except errors.PitstopError as error:
            response = on_error(error)
        if engine.draining:
            response.headers["connection"] = "close"
        return response

    return route
