"""Bearer tokens with scopes: secrets are made and checked here, only their sha256 is kept.

Tokens live in the registry (``pitstop token create``: every replica accepts them, a revocation
reaches every replica within the registry's convergence bound) and, for compatibility, in a
0600 file ``tokens.json`` under ``PITSTOP_HOME`` (``[{"name", "sha256", "scopes"}]``) that only
that host's server reads. The first admin token is created on a server's first start when there
is none anywhere, and written once, on its own, to ``admin.token`` (mode 0600) so an operator can
read it; deleting that file does not revoke it. A presented secret is looked up by its sha256:
what an attacker controls is the preimage, so the lookup's timing says nothing about any stored
digest. Scopes are :mod:`pitstop.security.authorization`'s.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from pitstop.errors import InvalidInput, Unauthenticated
from pitstop.security.authorization import Principal, Scope, parse_scope, parse_scopes

log = logging.getLogger(__name__)

ADMIN: Final = "admin"
READ: Final = "read"
INFER: Final = "infer"

MAX_SECRET_LENGTH: Final = 512
"""Longest bearer secret looked at; pitstop's own are 47 characters."""


class StoredToken(Protocol):
    """A token as the registry's snapshot carries it (``registry.TokenRecord``)."""

    @property
    def name(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def rate_limit(self) -> float | None: ...
    @property
    def burst(self) -> int | None: ...


@dataclass(frozen=True)
class Token:
    name: str
    sha256: str
    scopes: tuple[Scope, ...]
    expires_at: datetime | None = None
    rate_limit: float | None = None
    burst: int | None = None

    @functools.cached_property
    def principal(self) -> Principal:
        return Principal(f"token:{self.name}", self.scopes, self.rate_limit, self.burst)


SharedTokens = Callable[[], Sequence[StoredToken]]
"""The registry's tokens, read from memory (no I/O)."""


def digest_of(secret: str) -> str:
    """The sha256 (hex) of a token secret: what the registry stores."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> tuple[str, str]:
    """A new token secret and its sha256 (the only part anything stores)."""
    secret = "pst_" + secrets.token_urlsafe(32)
    return secret, digest_of(secret)


def check_scopes(scopes: Sequence[str]) -> None:
    """InvalidInput naming the first scope that is not ``admin``, ``read``, ``infer`` or
    ``infer:PATTERN`` (or when there is none)."""
    parse_scopes(scopes)


def bearer_secret(authorization: str) -> str:
    """The secret of an ``Authorization: Bearer <secret>`` value; Unauthenticated saying what
    is wrong with it otherwise (never echoing it)."""
    kind, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if kind.lower() != "bearer" or not secret:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    if len(secret) > MAX_SECRET_LENGTH or not secret.isascii() or not secret.isprintable():
        raise Unauthenticated("malformed bearer token")
    return secret


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), replacing it at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(path.with_suffix(".tmp"), path)
    path.chmod(0o600)


class TokenFile:
    """The token store of one ``PITSTOP_HOME``. Blocking file I/O; call at start-up or from CLI."""

    def __init__(self, home: Path) -> None:
        self.path = home / "tokens.json"
        self.admin_path = home / "admin.token"

    def load(self) -> tuple[Token, ...]:
        if not self.path.exists():
            return ()
        raw = json.loads(self.path.read_text())
        if not isinstance(raw, list):
            raise ValueError("expected a JSON list of tokens")
        return tuple(Token(str(t["name"]), str(t["sha256"]), _readable(t["scopes"])) for t in raw)

    def _save(self, tokens: Sequence[Token]) -> None:
        body = [
            {"name": t.name, "sha256": t.sha256, "scopes": sorted(map(str, t.scopes))}
            for t in tokens
        ]
        write_private(self.path, json.dumps(body, indent=2))

    def create(self, name: str, scopes: Sequence[str]) -> str:
        """Add a token and return its secret (shown once; only its digest is stored)."""
        check_scopes(scopes)
        tokens = self.load()
        if any(t.name == name for t in tokens):
            raise InvalidInput(f"a token named {name!r} already exists")
        secret, digest = new_secret()
        self._save([*tokens, Token(name, digest, parse_scopes(scopes))])
        return secret

    def revoke(self, name: str) -> None:
        tokens = self.load()
        if not any(t.name == name for t in tokens):
            raise InvalidInput(f"no token named {name!r}")
        self._save([t for t in tokens if t.name != name])


class Authenticator:
    """Finds the token behind a bearer secret among the registry's tokens (``shared``, as the
    server last read them) and this host's :class:`TokenFile`.

    The file is re-read when it changes (one ``stat`` per authenticated call, a few
    microseconds); ``shared`` is read from memory, so a registry change takes effect
    as soon as the server has read it. Tokens are indexed by digest once per change, so a check
    is one sha256 and one lookup.
    """

    def __init__(
        self,
        source: TokenFile,
        shared: SharedTokens | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._source = source
        self._shared = shared
        self._clock = clock
        self._seen: tuple[int, int, int] | None = None
        self._tokens: tuple[Token, ...] = ()
        self._shared_seen: object = None
        self._shared_tokens: tuple[Token, ...] = ()
        self._index: dict[str, Token] = {}

    def _current(self) -> dict[str, Token]:
        # Every save replaces the file (a new inode), so coarse mtimes cannot hide a change.
        changed = False
        try:
            info = self._source.path.stat()
            seen: tuple[int, int, int] | None = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            seen = None
        if seen != self._seen:
            self._tokens = self._legacy() if seen is not None else ()
            self._seen = seen
            changed = True
        shared = self._shared() if self._shared is not None else ()
        if shared is not self._shared_seen:
            self._shared_tokens = tuple(_from_store(token) for token in shared)
            self._shared_seen = shared
            changed = True
        if changed:
            self._index = {t.sha256: t for t in (*self._tokens, *self._shared_tokens)}
        return self._index

    def _legacy(self) -> tuple[Token, ...]:
        """This host's token file; one that cannot be read grants nothing (logged once per
        change of the file), and never breaks the registry's tokens."""
        try:
            return self._source.load()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring %s: %s", self._source.path, exc)
            return ()

    def authenticate(self, authorization: str) -> Principal:
        """The principal of an ``Authorization`` header value; Unauthenticated when it is
        malformed, unknown or expired."""
        token = self._current().get(digest_of(bearer_secret(authorization)))
        if token is None:
            raise Unauthenticated("unknown token")
        if token.expires_at is not None and token.expires_at <= self._clock():
            expired = f"{token.expires_at:%Y-%m-%d %H:%M} UTC"
            raise Unauthenticated(f"token {token.name!r} expired at {expired}")
        return token.principal


def _readable(texts: Sequence[str]) -> tuple[Scope, ...]:
    """The scopes this version can read; any other grants nothing."""
    scopes: list[Scope] = []
    for text in texts:
        try:
            scopes.append(parse_scope(str(text)))
        except InvalidInput:
            continue
    return tuple(scopes)


def _from_store(token: StoredToken) -> Token:
    """A registry token as checked here."""
    return Token(
        token.name, token.sha256, _readable(token.scopes), token.expires_at, token.rate_limit,
        token.burst,
    )  # fmt: skip
