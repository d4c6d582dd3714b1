"""How every HTTP route answers: the error-to-status table, the JSON error body, Starlette's own
errors in the same shape, and :func:`guarded`, the wrapper every route of every HTTP API
(REST, admin, OpenAI, observability) is served through, so errors, access and draining behave
the same everywhere: a route cannot be built without naming its :class:`Action`, and the
:class:`~pitstop.security.gate.Gate` admits the call before the route runs. gRPC has its own
table (``grpc.CODE_BY_ERROR``) and the same gate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from pitstop import errors
from pitstop.engine import Engine
from pitstop.security.authorization import Action, Principal
from pitstop.security.gate import Credentials, Gate

Endpoint = Callable[[Request], Awaitable[Response]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived: nobody to answer."""


STATUS_BY_ERROR: Final[tuple[tuple[type[errors.PitstopError], int], ...]] = (
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
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
    if isinstance(error, errors.Unauthenticated):
        headers.append((b"www-authenticate", b'Bearer realm="pitstop"'))
    if isinstance(error, errors.Overloaded):
        headers.append((b"retry-after", error.retry_after_header.encode()))
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


PRINCIPAL: Final = "pitstop.principal"
"""The scope key under which a guarded route finds who called (:func:`principal_of`)."""


def credentials_of(scope: Scope) -> Credentials:
    """What an HTTP request carries: its ``Authorization`` header and, over mutual TLS, the
    verified client certificate's common name (``http11`` puts it in the ASGI ``tls``
    extension)."""
    authorization: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    tls = scope.get("extensions", {}).get("tls")
    common_name = tls.get("client_common_name") if isinstance(tls, dict) else None
    return Credentials(authorization, common_name if isinstance(common_name, str) else None)


def principal_of(request: Request) -> Principal:
    """Who called a guarded route (set by :func:`guarded` before the route runs)."""
    principal = request.scope.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise errors.InternalError("the route was not served through kit.guarded")
    return principal


def guarded(
    endpoint: Endpoint,
    engine: Engine,
    gate: Gate,
    action: Action,
    *,
    on_error: Callable[[errors.PitstopError], Response] = error_response,
    model_in_body: bool = False,
) -> Endpoint:
    """``endpoint`` behind the gate: the call is admitted for ``action`` on the path's
    ``{model}`` (if any) first — or, with ``model_in_body``, only authenticated here and the
    endpoint must call ``gate.allow(principal_of(request), action, model)`` once it has read
    the model from the body (so one request takes one unit of its rate); pitstop errors are
    answered with ``on_error`` (the JSON error body by default); while the Engine drains, every
    answer says ``Connection: close`` so clients reconnect elsewhere."""

    async def route(request: Request) -> Response:
        try:
            credentials = credentials_of(request.scope)
            if model_in_body:
                request.scope[PRINCIPAL] = gate.authenticate(credentials, action)
            else:
                model = request.path_params.get("model")
                request.scope[PRINCIPAL] = gate.admit(credentials, action, model)
            response = await endpoint(request)
        except ClientGone:
            response = Response(status_code=499)  # nobody reads it; uvicorn drops it
        except errors.PitstopError as error:
            response = on_error(error)
        if engine.draining:
            response.headers["connection"] = "close"
        return response

    return route
