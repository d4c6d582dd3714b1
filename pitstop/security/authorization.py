"""Who may do what: scopes, principals and :func:`authorize`, the one decision every call passes.

Transports only extract credentials (a bearer header, gRPC metadata, a verified client
certificate); :class:`pitstop.security.gate.Gate` turns them into a :class:`Principal` and asks
:func:`authorize` about the call's :class:`Action` and model. Nothing else decides access.

Scopes a token (or a mapped client certificate) carries:

=================  ===========================================================================
``admin``          everything (it can mint any token, so nothing is withheld from it)
``read``           metadata, readiness, statistics, metrics, drift, cost, traffic, status
``infer``          inference and the metadata clients read first, on every model
``infer:PATTERN``  the same on models whose name matches the glob (``fraud``, ``fraud-*``)
=================  ===========================================================================

Health probes need nothing. Without credentials a caller is anonymous: allowed inference,
metadata and the Triton-style statistics and metrics only when inference authentication is off
(``PITSTOP_INFERENCE_AUTH``: the default on a loopback address), never management.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pitstop.errors import InvalidInput


class Action(enum.Enum):
    """What a call does, as far as access is concerned."""

    HEALTH = "health"
    """Liveness and readiness probes."""
    DESCRIBE = "describe"
    """Server and model metadata, model readiness and configuration, the OpenAPI document."""
    INFER = "infer"
    """Inference (REST, gRPC, OpenAI)."""
    OBSERVE = "observe"
    """The statistics extension, the repository index and ``/metrics``: what Triton serves
    to anyone, which pitstop serves to anonymous callers only while inference is open."""
    READ = "read"
    """Management reads: traffic policies, rollouts, drift, cost."""
    ADMIN = "admin"
    """Changes: traffic, rollouts, rollback, repository load and unload."""


class Kind(enum.Enum):
    ADMIN = "admin"
    READ = "read"
    INFER = "infer"


ALLOWED_BY: Final[dict[Kind, frozenset[Action]]] = {
    Kind.ADMIN: frozenset(Action),
    Kind.READ: frozenset({Action.HEALTH, Action.DESCRIBE, Action.OBSERVE, Action.READ}),
    Kind.INFER: frozenset({Action.HEALTH, Action.DESCRIBE, Action.INFER}),
}
"""The actions each kind of scope allows (``infer`` only on the models it names)."""

OPEN_ACTIONS: Final = frozenset({Action.HEALTH, Action.DESCRIBE, Action.INFER, Action.OBSERVE})
"""What an anonymous caller may do while inference authentication is off."""

MAX_SCOPE_LENGTH: Final = 256
_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]{1,200}")


@dataclass(frozen=True)
class Scope:
    """One grant: a kind and, for ``infer``, an optional model-name glob."""

    kind: Kind
    pattern: str | None = None

    def allows(self, action: Action, model: str | None) -> bool:
        """Whether this grant allows ``action`` on ``model`` (None: a call about no model, or
        about a model not known yet — then any ``infer`` grant may describe)."""
        if action not in ALLOWED_BY[self.kind]:
            return False
        if self.kind is not Kind.INFER or self.pattern is None:
            return True
        if model is None:
            return action is not Action.INFER
        return fnmatch.fnmatchcase(model, self.pattern)

    def __str__(self) -> str:
        return self.kind.value if self.pattern is None else f"{self.kind.value}:{self.pattern}"


def parse_scope(text: str) -> Scope:
    """``admin``, ``read``, ``infer`` or ``infer:PATTERN``; InvalidInput naming what is wrong."""
    if not isinstance(text, str) or not text or len(text) > MAX_SCOPE_LENGTH:
        raise InvalidInput(f"scope: 1 to {MAX_SCOPE_LENGTH} characters, got {text!r:.80}")
    kind_text, colon, pattern = text.partition(":")
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise InvalidInput(
            f"scope {text!r:.80}: the kind must be admin, read or infer[:MODELS]"
        ) from None
    if not colon:
        return Scope(kind)
    if kind is not Kind.INFER:
        raise InvalidInput(f"scope {text!r:.80}: only infer takes a model pattern")
    if not _PATTERN.fullmatch(pattern):
        raise InvalidInput(
            f"scope {text!r:.80}: the model pattern is a glob of letters, digits, '_', '.', "
            "'-', '*', '?' and [...] classes (1 to 200 characters)"
        )
    return Scope(kind, pattern)


def parse_scopes(texts: Iterable[str]) -> tuple[Scope, ...]:
    """Every scope of a token, parsed; at least one."""
    scopes = tuple(parse_scope(text) for text in texts)
    if not scopes:
        raise InvalidInput("scopes: at least one (admin, read, infer or infer:MODELS)")
    return scopes


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token, a client certificate, or nobody (``anonymous``)."""

    name: str
    """``token:<name>``, ``cert:<common name>`` or ``anonymous``: what logs and the audit
    history show (never a secret)."""
    scopes: tuple[Scope, ...] = ()
    rate_limit: float | None = None
    """Requests per second; None: the server's default."""
    burst: int | None = None

    @property
    def anonymous(self) -> bool:
        return not self.scopes and self.name == ANONYMOUS.name


ANONYMOUS: Final = Principal("anonymous")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    """Why not (empty when allowed): what the 401/403 body says."""
    authenticated: bool = True
    """False when credentials are missing: 401 / UNAUTHENTICATED rather than 403."""


ALLOW: Final = Decision(True, "")


def authorize(principal: Principal, action: Action, model: str | None, *, open_: bool) -> Decision:
    """Whether ``principal`` may do ``action`` on ``model``. ``open_``: inference
    authentication is off, so anonymous callers may do :data:`OPEN_ACTIONS`."""
    if action is Action.HEALTH:
        return ALLOW
    if principal.anonymous:
        if open_ and action in OPEN_ACTIONS:
            return ALLOW
        return Decision(
            False, f"this call ({action.value}) needs 'Authorization: Bearer <token>'", False
        )
    if any(scope.allows(action, model) for scope in principal.scopes):
        return ALLOW
    target = f" on model {model!r}" if model is not None else ""
    held = ", ".join(str(scope) for scope in principal.scopes) or "none"
    return Decision(False, f"{principal.name} may not {action.value}{target} (its scopes: {held})")
