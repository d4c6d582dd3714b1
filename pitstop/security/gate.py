"""The one place a call is let in: credentials → principal → :func:`authorize` → rate limit.

Every HTTP route (``transports/kit.guarded``, the inference front) and every gRPC method
(``transports/grpc``'s route table) calls :meth:`Gate.admit` with what it extracted — the
``Authorization`` value and the verified client certificate's common name — and the call's
action and model. Denials raise ``Unauthenticated`` (401 / UNAUTHENTICATED), ``PermissionDenied``
(403 / PERMISSION_DENIED) or ``Overloaded`` (429 + ``Retry-After`` / RESOURCE_EXHAUSTED); each is
counted (``on_denied``) and logged with the principal, never the token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pitstop.errors import Overloaded, PermissionDenied, Unauthenticated
from pitstop.security.authorization import (
    ANONYMOUS,
    OPEN_ACTIONS,
    Action,
    Principal,
    authorize,
    parse_scopes,
)
from pitstop.security.rate import RateLimiter
from pitstop.security.token import Authenticator

log = logging.getLogger(__name__)

LOG_EVERY_S: Final = 10.0
"""Denials of one principal and reason are logged at most this often (with a count)."""

MAX_LOGGED_KEYS: Final = 4096

Denied = Callable[[Action, str], None]
"""Counts a denial: (action, reason ``unauthenticated`` | ``forbidden`` | ``rate_limited``)."""


@dataclass(frozen=True)
class Credentials:
    """What a transport extracted from a call, unverified except the certificate (the TLS
    handshake verified it against ``PITSTOP_TLS_CLIENT_CA``)."""

    authorization: str | None = None
    certificate: str | None = None
    """The verified client certificate's subject common name."""


NONE: Final = Credentials()


class Gate:
    """Authentication, :func:`authorize` and rate limits, for one server process."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        open_inference: bool,
        certificate_scopes: Mapping[str, Sequence[str]] | None = None,
        rate_limit: float = 0.0,
        burst: int = 0,
        share: float = 1.0,
        on_denied: Denied | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authenticator = authenticator
        self.open_inference = open_inference
        """Anonymous callers may infer and describe (inference authentication is off)."""
        self._certificates = {
            name: parse_scopes(scopes) for name, scopes in (certificate_scopes or {}).items()
        }
        self._rate = rate_limit
        self._burst = burst
        self._share = share
        """The part of every rate and burst this process enforces (``1/workers``)."""
        self._on_denied = on_denied
        self._clock = clock
        self._limiter = RateLimiter()
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def principal(self, credentials: Credentials) -> Principal:
        """Who the credentials name: the token's principal when a bearer header is sent, else
        the mapped certificate's, else anonymous. Unauthenticated for a bad token."""
        if credentials.authorization:
            return self._authenticator.authenticate(credentials.authorization)
        name = credentials.certificate
        if name is not None:
            scopes = self._certificates.get(name, self._certificates.get("*"))
            if scopes is not None:
                return Principal(f"cert:{name}", scopes)
        return ANONYMOUS

    def admit(self, credentials: Credentials, action: Action, model: str | None) -> Principal:
        """The principal, if it may do ``action`` on ``model`` now; else the error to answer."""
        if action is Action.HEALTH:
            return ANONYMOUS
        return self.allow(self.authenticate(credentials, action), action, model)

    def authenticate(self, credentials: Credentials, action: Action) -> Principal:
        """Who calls, before the request is read: Unauthenticated for a bad token, or for an
        anonymous caller that could not do ``action`` on any model. :meth:`allow` decides
        the rest once the model is known.

        While inference is open, a bearer value that is no valid token is ignored on the calls
        anyone may make (the caller is anonymous, as without it): OpenAI's SDKs always send
        one (``api_key="unused"``), and refusing it would protect nothing."""
        if action is Action.HEALTH:
            return ANONYMOUS
        try:
            principal = self.principal(credentials)
        except Unauthenticated as error:
            if self.open_inference and action in OPEN_ACTIONS:
                return ANONYMOUS
            self._deny(_named(credentials), action, "unauthenticated", str(error))
            raise
        if principal.anonymous:
            decision = authorize(principal, action, None, open_=self.open_inference)
            if not decision.allowed:
                self._deny(principal.name, action, "unauthenticated", decision.reason)
                raise Unauthenticated(decision.reason)
        return principal

    def allow(self, principal: Principal, action: Action, model: str | None) -> Principal:
        """:func:`authorize` and the rate limit for an already authenticated principal (a
        gRPC method that learns its model after parsing the request asks again with it)."""
        decision = authorize(principal, action, model, open_=self.open_inference)
        if not decision.allowed:
            if not decision.authenticated:
                self._deny(principal.name, action, "unauthenticated", decision.reason)
                raise Unauthenticated(decision.reason)
            self._deny(principal.name, action, "forbidden", decision.reason)
            raise PermissionDenied(decision.reason)
        if principal.anonymous:
            return principal
        rate = principal.rate_limit if principal.rate_limit is not None else self._rate
        burst = principal.burst if principal.burst is not None else self._burst
        if burst <= 0:
            burst = round(rate)
        rate, burst = rate * self._share, max(1, round(burst * self._share))
        wait = self._limiter.take(principal.name, rate, burst, self._clock())
        if wait > 0:
            self._deny(principal.name, action, "rate_limited", f"over {rate:g} requests/s")
            raise Overloaded(f"{principal.name} is over its rate limit ({rate:g} requests/s)", wait)
        return principal

    def permits(self, principal: Principal, action: Action, model: str | None) -> bool:
        """Whether :func:`authorize` allows it (no rate taken, nothing counted): for filtering
        a listing down to what the caller may use."""
        return authorize(principal, action, model, open_=self.open_inference).allowed

    def _deny(self, who: str, action: Action, reason: str, message: str) -> None:
        if self._on_denied is not None:
            self._on_denied(action, reason)
        now = self._clock()
        key = (who, reason)
        last, suppressed = self._logged.get(key, (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._logged[key] = (last, suppressed + 1)
            return
        if len(self._logged) >= MAX_LOGGED_KEYS:
            self._logged.clear()
        self._logged[key] = (now, 0)
        more = f" ({suppressed} more since the last line)" if suppressed else ""
        log.warning("denied %s: %s %s: %s%s", who, action.value, reason, message, more)


def _named(credentials: Credentials) -> str:
    """Who a failed authentication claimed to be, for the log: never the token."""
    if credentials.certificate is not None:
        return f"cert:{credentials.certificate}"
    return "bearer:unknown" if credentials.authorization else "anonymous"
