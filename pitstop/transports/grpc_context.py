"""The context of one gRPC call: who made it, its credentials and metadata, and the status code
a pitstop error ends it with. Shared by the route table (``transports/grpc.py``) and the
inference methods (``transports/grpc_inference.py``).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Final

import grpc
import grpc.aio

from pitstop import errors
from pitstop.security.authorization import ANONYMOUS, Principal
from pitstop.security.gate import Credentials

Context = grpc.aio.ServicerContext[Any, Any]

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


def code_of(error: errors.PitstopError) -> grpc.StatusCode:
    for kind, code in CODE_BY_ERROR:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


CALLER: ContextVar[Principal] = ContextVar("pitstop_grpc_caller", default=ANONYMOUS)
"""Who made the current call: set by the guard before a method runs (each call is a task)."""


def metadata_of(context: Context) -> dict[str, str]:
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
