"""Signatures of versions, and which keys servers trust, in the registry and its history.

The registry keeps each signature of a version's digest as given (key id, algorithm, the
signature, the signer's public key as PEM for people to read) and verifies nothing: whoever
loads a version checks its signatures against the keys *it* trusts
(:mod:`pitstop.security.signature`), so a row written here can never make a version trusted by
itself. One signature per (model, version, key id). Adding one is a catalog change: it moves the
generation, so servers re-read and retry a version that failed for want of a signature; it is
audited ``version.sign`` with the key id, never a private key.

``trust.policy`` events say which keys a server trusted from when: a server records the ids of
its trusted keys at start when they differ from the last recorded set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from pitstop.errors import Conflict, InvalidInput
from pitstop.registry.audit import NO_MODEL, append_event
from pitstop.registry.database import transaction
from pitstop.registry.names import check_actor
from pitstop.registry.schema import (
    AuditEventRow,
    CatalogStateRow,
    SignatureRow,
    VersionRow,
)
from pitstop.registry.views import bump_generation, model_row, version_row

KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,127}")
ALGORITHM_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_SIGNATURE_LENGTH: Final = 512
MAX_PUBLIC_KEY_LENGTH: Final = 16 * 1024


@dataclass(frozen=True)
class SignatureRecord:
    """One stored signature of a version's digest."""

    model: str
    version: int
    digest: str
    """The version's digest: what the signature covers."""
    key_id: str
    algorithm: str
    signature: str
    public_key: str
    """The signer's public key as PEM, informational: servers trust their own key files."""
    signed_by: str
    signed_at: datetime


class Signatures:
    """Signatures of one registry's versions (``registry.signatures``). Blocking,
    thread-safe."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def add(
        self,
        model: str,
        version: int,
        *,
        key_id: str,
        algorithm: str,
        public_key: str,
        signature: str,
        actor: str,
        reason: str | None = None,
    ) -> bool:
        """Store a signature of ``model`` ``version``'s digest; True when stored, False when
        this very signature was already there (nothing changes then). Conflict when the key
        already signed the version with other bytes. ModelNotFound, VersionNotFound,
        InvalidInput for malformed values. The caller has verified it; this layer does not."""
        check_actor(actor)
        if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
            raise InvalidInput(f"signature key id {key_id!r:.60}: 1-128 letters, digits, ':._-'")
        if not isinstance(algorithm, str) or not ALGORITHM_PATTERN.fullmatch(algorithm):
            raise InvalidInput(f"signature algorithm {algorithm!r:.60}: a short lower-case name")
        if not _printable(signature, MAX_SIGNATURE_LENGTH):
            raise InvalidInput(f"signature: 1-{MAX_SIGNATURE_LENGTH} printable ASCII characters")
        if not isinstance(public_key, str) or len(public_key) > MAX_PUBLIC_KEY_LENGTH:
            raise InvalidInput(f"signature public key: PEM text of at most "
                               f"{MAX_PUBLIC_KEY_LENGTH} characters")  # fmt: skip
        try:
            with transaction(self._engine, write=True) as session:
                bump_generation(session)
                row = model_row(session, model)
                target = version_row(session, row, version)
                existing = session.get(SignatureRow, (row.id, version, key_id))
                if existing is not None:
                    if (existing.algorithm, existing.signature) == (algorithm, signature):
                        session.rollback()  # nothing changed: the generation stays
                        return False
                    raise Conflict(
                        f"{model} v{version} already carries another signature by {key_id}"
                    )
                now = self._clock()
                session.add(
                    SignatureRow(
                        model_id=row.id, version=version, key_id=key_id, algorithm=algorithm,
                        public_key=public_key, signature=signature, signed_by=actor,
                        signed_at=now,
                    )
                )  # fmt: skip
                append_event(
                    session, at=now, actor=actor, action="version.sign", model=model,
                    version=version, reason=reason,
                    after={"key_id": key_id, "algorithm": algorithm, "digest": target.digest},
                )  # fmt: skip
                return True
        except IntegrityError as exc:  # a writer that bypassed the generation row
            raise Conflict(f"{model} v{version} was signed by {key_id} meanwhile") from exc

    def of(self, model: str, version: int | None = None) -> list[SignatureRecord]:
        """The signatures of ``model`` (of one ``version`` if given), by version then key id.
        ModelNotFound for an unknown model; an unknown version simply has none."""
        with transaction(self._engine, write=False) as session:
            row = model_row(session, model)
            query = (
                select(SignatureRow, VersionRow.digest)
                .join(
                    VersionRow,
                    (VersionRow.model_id == SignatureRow.model_id)
                    & (VersionRow.number == SignatureRow.version),
                )
                .where(SignatureRow.model_id == row.id)
                .order_by(SignatureRow.version, SignatureRow.key_id)
            )
            if version is not None:
                query = query.where(SignatureRow.version == version)
            return [_record(model, sig, digest) for sig, digest in session.execute(query)]

    def record_trust(self, key_ids: Sequence[str], *, actor: str) -> bool:
        """Append a ``trust.policy`` event with the sorted ``key_ids`` unless the newest such
        event holds the same set; True when appended. Not a catalog change (the generation
        stays), but serialised with catalog writers, so replicas starting together record a
        change once."""
        check_actor(actor)
        keys = sorted(set(key_ids))
        with transaction(self._engine, write=True) as session:
            # Take the catalog row's lock without moving the generation (PostgreSQL; a SQLite
            # write transaction holds the database's lock already).
            session.execute(
                select(CatalogStateRow.id).where(CatalogStateRow.id == 1).with_for_update()
            )
            last = session.scalar(
                select(AuditEventRow.after)
                .where(AuditEventRow.model == NO_MODEL, AuditEventRow.action == "trust.policy")
                .order_by(AuditEventRow.id.desc())
                .limit(1)
            )
            if isinstance(last, dict) and last.get("keys") == keys:
                return False
            append_event(
                session, at=self._clock(), actor=actor, action="trust.policy", model=NO_MODEL,
                before=last if isinstance(last, dict) else None, after={"keys": keys},
            )  # fmt: skip
            return True


def _record(model: str, row: SignatureRow, digest: str) -> SignatureRecord:
    return SignatureRecord(
        model, row.version, digest, row.key_id, row.algorithm, row.signature, row.public_key,
        row.signed_by, row.signed_at,
    )  # fmt: skip


def _printable(value: object, limit: int) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= limit
        and value.isascii()
        and value.isprintable()
    )
