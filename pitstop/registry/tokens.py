"""Bearer tokens in the registry, so every replica accepts the same ones.

The registry keeps each token's name, scopes and the sha256 of its secret, never the secret
(:mod:`pitstop.security.token` makes secrets and checks them). Creating or revoking a token is
a catalog change: it moves the generation (replicas re-read, on PostgreSQL at once by notice,
so a revocation reaches every replica within the convergence bound) and is audited
(``token.create``, ``token.revoke``), without the secret.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pitstop.errors import Conflict, InvalidInput, NotFound
from pitstop.registry.audit import NO_MODEL, append_event
from pitstop.registry.database import transaction
from pitstop.registry.names import check_actor, check_name
from pitstop.registry.records import TokenRecord
from pitstop.registry.schema import TokenRow
from pitstop.registry.views import bump_generation, token_record

__all__ = ["TokenRecord", "Tokens", "read_tokens"]


class Tokens:
    """The tokens of one registry (``registry.tokens``)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def create(
        self,
        name: str,
        sha256: str,
        scopes: Sequence[str],
        *,
        actor: str,
        expires_at: datetime | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
    ) -> None:
        """Store a token; Conflict if the name (or, by astronomical chance, the digest) is
        taken. Scopes are checked by the caller (:mod:`pitstop.security.authorization`); this layer
        keeps them as given."""
        check_name("token name", name)
        check_actor(actor)
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidInput("token digest: 64 lower-case hex digits (sha256 of the secret)")
        if not scopes:
            raise InvalidInput("token scopes: at least one")
        if rate_limit is not None and not 0 < rate_limit < math.inf:
            raise InvalidInput("token rate limit: a positive number of requests per second")
        if burst is not None and burst < 1:
            raise InvalidInput("token burst: at least 1")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("token expiry: must be in the future")
        try:
            with transaction(self._engine, write=True) as session:
                bump_generation(session)
                if session.get(TokenRow, name) is not None:
                    raise Conflict(f"a token named {name!r} already exists")
                session.add(TokenRow(name=name, sha256=sha256, scopes=sorted(scopes),
                                     created_at=now, created_by=actor, expires_at=expires_at,
                                     rate_limit=rate_limit, burst=burst))  # fmt: skip
                session.flush()
                after: dict[str, object] = {"token": name, "scopes": sorted(scopes)}
                if expires_at is not None:
                    after["expires_at"] = expires_at.isoformat()
                if rate_limit is not None:
                    after["rate_limit"] = rate_limit
                if burst is not None:
                    after["burst"] = burst
                append_event(
                    session, at=now, actor=actor, action="token.create", model=NO_MODEL,
                    after=after,
                )  # fmt: skip
        except IntegrityError as exc:
            raise Conflict(f"a token named {name!r} already exists") from exc

    def revoke(self, name: str, *, actor: str) -> None:
        """Delete a token; NotFound if there is none by that name."""
        check_actor(actor)
        with transaction(self._engine, write=True) as session:
            bump_generation(session)
            row = session.get(TokenRow, name)
            if row is None:
                raise NotFound(f"no token named {name!r}")
            before = {"token": name, "scopes": list(row.scopes)}
            session.execute(delete(TokenRow).where(TokenRow.name == name))
            append_event(
                session, at=self._clock(), actor=actor, action="token.revoke", model=NO_MODEL,
                before=before,
            )  # fmt: skip

    def all(self) -> list[TokenRecord]:
        with transaction(self._engine, write=False) as session:
            return read_tokens(session)


def read_tokens(session: Session) -> list[TokenRecord]:
    """Every token, by name."""
    return [token_record(row) for row in session.scalars(select(TokenRow).order_by(TokenRow.name))]
