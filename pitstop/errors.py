"""The one error hierarchy of pitstop. Transports map it to status codes; nothing here knows them.

PitstopError
 ├── InvalidInput            the caller sent something we cannot serve (names the field)
 │    └── PayloadTooLarge    the request body exceeds the configured limit
 ├── NotFound               no such model, version or alias
 │    ├── ModelNotFound
 │    └── VersionNotFound
 ├── Conflict               the change contradicts the registry's current state
 ├── Unavailable            the model exists but cannot serve right now (not loaded, draining)
 │    └── RegistryUnavailable   the registry's database cannot be reached
 ├── Overloaded             a bounded queue is full; retry later
 ├── DeadlineExceeded       the request's deadline passed before it could be served
 ├── Unsupported            a feature or datatype this server does not implement
 ├── Unauthenticated        no or unknown credentials
 ├── PermissionDenied       credentials without the needed scope
 └── InternalError          a bug or a runtime failure not caused by the input
      ├── ArtifactIntegrityError   stored files do not match their recorded digest
      └── LoadError                a version could not be loaded or warmed up
"""

from __future__ import annotations

import math


class PitstopError(Exception):
    """Base of every error pitstop raises on purpose. ``str(err)`` is the message users see."""


class InvalidInput(PitstopError):
    """The request is malformed; the message names the offending input or field."""


class UnsupportedMediaType(InvalidInput):
    """The request body's Content-Type is not one the route reads (HTTP 415)."""


class PayloadTooLarge(InvalidInput):
    """The request body is larger than the configured maximum."""


class NotFound(PitstopError):
    """The addressed model, version or alias does not exist."""


class ModelNotFound(NotFound):
    """No model with this name is registered (or none of it is being served)."""


class VersionNotFound(NotFound):
    """The model exists, but not the requested version or alias."""


class Conflict(PitstopError):
    """The requested change contradicts the registry's current state."""


class Unavailable(PitstopError):
    """The model exists but cannot serve right now: not loaded yet, failed, or shutting down."""


class RegistryUnavailable(Unavailable):
    """The registry's database cannot be reached (or answered with a connection-level error).
    What a server has loaded keeps serving; registry reads and changes wait for it."""


class Overloaded(PitstopError):
    """A bounded queue is full. ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` in whole seconds, rounded up (at least 1): a client that waits that
        long is not refused again for the same reason."""
        return str(max(1, math.ceil(self.retry_after)))


class DeadlineExceeded(PitstopError):
    """The request's deadline passed before it was served; it was not executed."""


class Unsupported(PitstopError):
    """A valid request for something this server does not implement."""


class Unauthenticated(PitstopError):
    """Missing or unknown credentials."""


class PermissionDenied(PitstopError):
    """Valid credentials that lack the scope the call needs."""


class InternalError(PitstopError):
    """A failure on our side, not caused by the caller's input."""


class ArtifactIntegrityError(InternalError):
    """A stored artifact no longer matches its content digest; it must not be deserialised."""


class LoadError(InternalError):
    """A version could not be loaded, verified or warmed up."""


class NotIsolatable(LoadError):
    """A version that cannot run in a worker process (a decoupled handler): without an
    explicit ``isolation`` in its manifest it runs in the server process instead."""


SERVER_FAILURES: tuple[type[PitstopError], ...] = (
    InternalError,
    Overloaded,
    DeadlineExceeded,
    Unavailable,
)
"""Failures that are the server's, not the caller's: they count against a version in a rollout,
spend an availability budget and let a traffic policy's fallback answer instead."""

ERROR_KINDS: tuple[tuple[type[PitstopError], str], ...] = (
    (InvalidInput, "invalid_input"),
    (NotFound, "not_found"),
    (Overloaded, "overloaded"),
    (DeadlineExceeded, "timeout"),
    (Unavailable, "unavailable"),
    (Unsupported, "unsupported"),
    (Unauthenticated, "unauthenticated"),
    (PermissionDenied, "permission_denied"),
)
"""Metric and log names of error classes, most specific first; anything else is
``internal``."""


def is_server_failure(error: BaseException) -> bool:
    """Whether ``error`` is the server's fault (see :data:`SERVER_FAILURES`); an exception that
    is not a :class:`PitstopError` is a bug, so it is too."""
    return isinstance(error, SERVER_FAILURES) or not isinstance(error, PitstopError)


def error_kind(error: BaseException) -> str:
    """The bounded name of ``error``'s class for metric labels and log lines."""
    for kind, name in ERROR_KINDS:
        if isinstance(error, kind):
            return name
    return "internal"
