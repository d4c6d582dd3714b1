"""Bearer tokens with scopes: secrets are made and checked here, only their sha256 is kept.

Tokens live in the registry (``pitstop token create``: every replica accepts them, a revocation
reaches every replica within the registry's convergence bound) and, for compatibility, in a
0600 file ``tokens.json`` under ``PITSTOP_HOME`` (``[{"name", "sha256", "scopes"}]``) that only
that host's server reads. The first admin token is created on a server's first start when there
is none anywhere, and written once, on its own, to ``admin.token`` (mode 0600) so an operator can
read it; deleting that file does not revoke it. Checks compare sha256 digests with
:func:`hmac.compare_digest`, so timing reveals nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pitstop.errors import InvalidInput, PermissionDenied, Unauthenticated

ADMIN: Final = "admin"
READ: Final = "read"
SCOPES: Final = frozenset({ADMIN, READ})
"""``admin`` may change what is served (repository load/unload, rollouts); ``read`` may read
management data (statistics, status). Inference needs no token."""


@dataclass(frozen=True)
class Token:
    name: str
    sha256: str
    scopes: frozenset[str]


SharedTokens = Callable[[], Sequence[tuple[str, str, Sequence[str]]]]
"""The registry's tokens as (name, sha256, scopes), read from memory (no I/O)."""


def digest_of(secret: str) -> str:
    """The sha256 (hex) of a token secret: what the registry stores."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> tuple[str, str]:
    """A new token secret and its sha256 (the only part anything stores)."""
    secret = "pst_" + secrets.token_urlsafe(32)
    return secret, digest_of(secret)


def check_scopes(scopes: Sequence[str]) -> None:
    unknown = set(scopes) - SCOPES
    if unknown or not scopes:
        raise InvalidInput(f"scopes must be among {sorted(SCOPES)}, got {sorted(scopes)}")


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
        return tuple(Token(t["name"], t["sha256"], frozenset(t["scopes"])) for t in raw)

    def _save(self, tokens: Sequence[Token]) -> None:
        body = [{"name": t.name, "sha256": t.sha256, "scopes": sorted(t.scopes)} for t in tokens]
        write_private(self.path, json.dumps(body, indent=2))

    def create(self, name: str, scopes: Sequence[str]) -> str:
        """Add a token and return its secret (shown once; only its digest is stored)."""
        check_scopes(scopes)
        tokens = self.load()
        if any(t.name == name for t in tokens):
            raise InvalidInput(f"a token named {name!r} already exists")
        secret, digest = new_secret()
        self._save([*tokens, Token(name, digest, frozenset(scopes))])
        return secret

    def revoke(self, name: str) -> None:
        tokens = self.load()
        if not any(t.name == name for t in tokens):
            raise InvalidInput(f"no token named {name!r}")
        self._save([t for t in tokens if t.name != name])


class Authenticator:
    """Checks ``Authorization`` header values against the registry's tokens (``shared``, as
    the server last read them) and this host's :class:`TokenFile`.

    The file is re-read when it changes (one ``stat`` per management call; inference is not
    checked); ``shared`` is read from memory, so a registry change takes effect as soon as the
    server has read it.
    """

    def __init__(self, source: TokenFile, shared: SharedTokens | None = None) -> None:
        self._source = source
        self._shared = shared
        self._seen: tuple[int, int, int] | None = None
        self._tokens: tuple[Token, ...] = ()
        self._shared_seen: object = None
        self._shared_tokens: tuple[Token, ...] = ()

    def _current(self) -> tuple[Token, ...]:
        # Every save replaces the file (a new inode), so coarse mtimes cannot hide a change.
        try:
            info = self._source.path.stat()
            seen: tuple[int, int, int] | None = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            self._tokens = self._source.load() if seen is not None else ()
            self._seen = seen
        if self._shared is None:
            return self._tokens
        shared = self._shared()
        if shared is not self._shared_seen:
            self._shared_tokens = tuple(
                Token(name, sha256, frozenset(scopes)) for name, sha256, scopes in shared
            )
            self._shared_seen = shared
        return self._tokens + self._shared_tokens

    def require(self, authorization: str | None, scope: str) -> Token:
        """The token behind the header, if it has ``scope``; else Unauthenticated (no or unknown
        token) or PermissionDenied (a valid token without the scope)."""
        if not authorization:
            raise Unauthenticated("this call needs 'Authorization: Bearer <token>'")
        kind, _, secret = authorization.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        offered = digest_of(secret.strip())
        match: Token | None = None
        for token in self._current():  # no early exit: every check costs the same
            if hmac.compare_digest(offered, token.sha256):
                match = token
        if match is None:
            raise Unauthenticated("unknown token")
        if scope not in match.scopes:
            raise PermissionDenied(f"token {match.name!r} lacks the {scope!r} scope")
        return match
