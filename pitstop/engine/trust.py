"""The server's signature trust policy (``PITSTOP_REQUIRE_SIGNATURE``, ``PITSTOP_TRUSTED_KEYS``).

Built once at Engine start from the settings: the trusted public keys are read then (a missing,
unreadable or non-Ed25519 key file, or the policy on with no key at all, stops the start with
one line naming it). The ModelManager's loader asks :meth:`SignaturePolicy.check` before it
fetches a version's files: the version's stored signatures are read from the registry and
:func:`pitstop.security.signature.decide` says whether one of them is a trusted key's valid
signature of the digest. A refusal is a :class:`~pitstop.errors.LoadError` (never retried)
whose message is the FAILED reason; whatever served the alias keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pitstop.errors import InvalidInput, LoadError
from pitstop.registry import SignatureRecord, VersionRecord
from pitstop.security.signature import PublicKey, Signature, decide, read_trusted_keys
from pitstop.settings import Settings

log = logging.getLogger(__name__)

ReadSignatures = Callable[[str, int], Sequence[SignatureRecord]]
"""(model, version) → its stored signatures (``registry.signatures.of``); blocking."""


class SignaturePolicy:
    """Loads only versions signed by one of ``keys`` (the serving loader's ``TrustPolicy``)."""

    def __init__(self, keys: Sequence[PublicKey], signatures: ReadSignatures) -> None:
        if not keys:
            raise ValueError("a signature policy needs at least one trusted key")
        self.keys = tuple(keys)
        self._signatures = signatures

    @property
    def key_ids(self) -> list[str]:
        return sorted(key.key_id for key in self.keys)

    def check(self, record: VersionRecord) -> None:
        """Return when a trusted key signed ``record``'s digest; LoadError saying why not."""
        stored = self._signatures(record.model, record.number)
        verdict = decide(
            record.digest, [Signature(s.key_id, s.algorithm, s.signature) for s in stored],
            self.keys,
        )  # fmt: skip
        if not verdict.trusted:
            raise LoadError(
                f"{record.label} is not signed by a trusted key (PITSTOP_REQUIRE_SIGNATURE): "
                f"{verdict.reason}"
            )
        log.info("%s: signature %s", record.label, verdict.reason)


def trusted_keys(settings: Settings) -> tuple[PublicKey, ...]:
    """The keys ``PITSTOP_TRUSTED_KEYS`` names, read and checked now. InvalidInput (one line,
    naming the setting and the file) when one cannot be read or is no Ed25519 public key, or
    when ``PITSTOP_REQUIRE_SIGNATURE`` is on without any key."""
    try:
        keys = read_trusted_keys(settings.trusted_keys)
    except InvalidInput as exc:
        raise InvalidInput(f"PITSTOP_TRUSTED_KEYS: {exc}") from exc
    if settings.require_signature and not keys:
        named = (
            f"names no public key ({', '.join(map(str, settings.trusted_keys))})"
            if settings.trusted_keys
            else "is empty"
        )
        raise InvalidInput(
            f"PITSTOP_REQUIRE_SIGNATURE is on but PITSTOP_TRUSTED_KEYS {named}: nothing could "
            "ever be loaded"
        )
    return keys


def signature_policy(
    settings: Settings, keys: Sequence[PublicKey], signatures: ReadSignatures
) -> SignaturePolicy | None:
    """The policy the settings ask for, or None when signatures are not required."""
    if not settings.require_signature:
        if keys:
            log.warning(
                "PITSTOP_TRUSTED_KEYS is set but PITSTOP_REQUIRE_SIGNATURE is off: "
                "signatures are not checked"
            )
        return None
    return SignaturePolicy(keys, signatures)
