"""Ed25519 signatures over version digests: keys, signing, and the one trust decision.

The only module that imports ``cryptography`` (import-linter contract). What is signed is the
version's content digest exactly as the registry stores it (``sha256:<64 hex>``, see
:mod:`pitstop.registry.digest`), after a domain separator, so a pitstop signature can never be
replayed as a signature of anything else::

    message = b"pitstop-signature-v1\\n" + digest.encode("ascii")

Keys are PEM files: the private key PKCS#8 (unencrypted; keep it mode 0600), the public key
SubjectPublicKeyInfo. A key's id is ``"ed25519:"`` followed by the first 16 hex digits of the
sha256 of its raw 32-byte public key. Ed25519 rather than Sigstore: verification needs no
network and no identity provider (docs/signing.md says more).

Everything that parses outside bytes (key files, stored signatures) is strict and bounded, and
fails only with :class:`~pitstop.errors.InvalidInput` naming what is wrong and where.
:func:`decide` is pure: given a digest, its signatures and the trusted keys, it says whether the
version may be loaded and why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pitstop.errors import InvalidInput

ALGORITHM: Final = "ed25519"
DOMAIN: Final = b"pitstop-signature-v1\n"
"""Prefix of every signed message: signatures made for pitstop mean nothing elsewhere."""

MAX_KEY_FILE_BYTES: Final = 64 * 1024
"""A PEM Ed25519 key is ~120 bytes; anything past this is refused unread."""

SIGNATURE_BYTES: Final = 64
SIGNATURE_LENGTH: Final = 88
"""Characters of a signature in standard base64 (64 bytes, with ``==``)."""

KEY_ID_PATTERN: Final = re.compile(r"ed25519:[0-9a-f]{16}")
_DIGEST_PATTERN: Final = re.compile(r"sha256:[0-9a-f]{64}")
PUBLIC_KEY_SUFFIX: Final = ".pub"
"""Files a trusted-keys folder contributes."""


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key: its id, its raw 32 bytes and its PEM text."""

    key_id: str
    raw: bytes = field(repr=False)
    pem: str = field(repr=False)


@dataclass(frozen=True)
class PrivateKey:
    """An Ed25519 private key (its 32-byte seed, never shown) and its public half."""

    seed: bytes = field(repr=False)
    public: PublicKey

    @property
    def key_id(self) -> str:
        return self.public.key_id


@dataclass(frozen=True)
class Signature:
    """One signature of a digest: which key (by id), which algorithm, the bytes in base64.

    Built from stored values as they are; :func:`parse_signature` checks them, and a malformed
    one simply does not verify."""

    key_id: str
    algorithm: str
    value: str


@dataclass(frozen=True)
class Verdict:
    """Whether a version may be loaded under the trust policy, and why (``reason`` reads after
    "trusted:" or "not trusted:")."""

    trusted: bool
    reason: str
    key_id: str | None = None
    """The trusted key whose signature verified, when trusted."""


# -- keys ---------------------------------------------------------------------------------------


def key_id_of(raw: bytes) -> str:
    """The id of a raw 32-byte Ed25519 public key."""
    return ALGORITHM + ":" + hashlib.sha256(raw).hexdigest()[:16]


def generate_key() -> PrivateKey:
    """A new random key pair."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return _private_from_seed(seed)


def private_pem(key: PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (write it with mode 0600)."""
    return Ed25519PrivateKey.from_private_bytes(key.seed).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def parse_public_key(data: bytes, source: str) -> PublicKey:
    """The Ed25519 public key in PEM ``data``; InvalidInput naming ``source`` otherwise (not
    PEM, another algorithm, a private key, too large)."""
    _check_size(data, source)
    if b"PRIVATE KEY" in data:
        raise InvalidInput(f"{source}: a private key; trust and verification use the .pub file")
    try:
        loaded = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{source}: not a PEM public key ({_first_line(exc)})") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise InvalidInput(f"{source}: not an Ed25519 key ({_kind(loaded)}); pitstop signs with "
                           "Ed25519 (pitstop key create)")  # fmt: skip
    return _public_from_raw(
        loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def parse_private_key(data: bytes, source: str) -> PrivateKey:
    """The Ed25519 private key in unencrypted PKCS#8 PEM ``data``; InvalidInput naming
    ``source`` otherwise."""
    _check_size(data, source)
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InvalidInput(f"{source}: an encrypted private key; pitstop reads unencrypted "
                           "PKCS#8 (keep the file mode 0600)") from None  # fmt: skip
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"{source}: not a PEM private key ({_first_line(exc)})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise InvalidInput(f"{source}: not an Ed25519 key ({_kind(loaded)}); pitstop signs with "
                           "Ed25519 (pitstop key create)")  # fmt: skip
    return _private_from_seed(
        loaded.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )


def read_public_key(path: Path) -> PublicKey:
    return parse_public_key(_read_bounded(path), str(path))


def read_private_key(path: Path) -> PrivateKey:
    return parse_private_key(_read_bounded(path), str(path))


def read_trusted_keys(paths: Iterable[Path]) -> tuple[PublicKey, ...]:
    """The keys of ``PITSTOP_TRUSTED_KEYS``: each path a PEM public key, or a folder whose
    ``*.pub`` files are (sorted; other files ignored). Duplicates count once. InvalidInput
    naming the first path that is missing or holds no Ed25519 public key."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.name.endswith(PUBLIC_KEY_SUFFIX))
        else:
            files = [path]
        for file in files:
            key = read_public_key(file)
            keys.setdefault(key.key_id, key)
    return tuple(keys.values())


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read key file ({exc.strerror or exc})") from None
    _check_size(data, str(path))
    return data


def _check_size(data: bytes, source: str) -> None:
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidInput(f"{source}: larger than {MAX_KEY_FILE_BYTES} bytes; not a key file")


def _public_from_raw(raw: bytes) -> PublicKey:
    pem = (
        Ed25519PublicKey.from_public_bytes(raw)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return PublicKey(key_id_of(raw), raw, pem)


def _private_from_seed(seed: bytes) -> PrivateKey:
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return PrivateKey(
        seed,
        _public_from_raw(public.public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)),
    )  # fmt: skip


def _kind(key: object) -> str:
    """``RSA``, ``EC``, ``Ed448``, ... from the key's class name."""
    name = type(key).__name__
    return name.removesuffix("PublicKey").removesuffix("PrivateKey") or name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


# -- signatures ---------------------------------------------------------------------------------


def message(digest: str) -> bytes:
    """The bytes a signature of ``digest`` covers; InvalidInput if it is no sha256 digest."""
    if not isinstance(digest, str) or not _DIGEST_PATTERN.fullmatch(digest):
        raise InvalidInput(f"not a version digest (sha256:<64 hex>): {digest!r:.80}")
    return DOMAIN + digest.encode("ascii")


def sign(key: PrivateKey, digest: str) -> Signature:
    """``key``'s signature of ``digest`` (deterministic: the same key and digest give the same
    signature)."""
    raw = Ed25519PrivateKey.from_private_bytes(key.seed).sign(message(digest))
    return Signature(key.key_id, ALGORITHM, base64.b64encode(raw).decode("ascii"))


def parse_signature(key_id: object, algorithm: object, value: object) -> Signature:
    """A signature from outside values, checked: a key id ``ed25519:<16 hex>``, the algorithm
    ``ed25519``, and exactly 64 bytes in canonical standard base64. InvalidInput otherwise."""
    if not isinstance(algorithm, str) or algorithm != ALGORITHM:
        raise InvalidInput(f"signature algorithm: {ALGORITHM!r} only, got {algorithm!r:.40}")
    if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
        raise InvalidInput(f"signature key id: 'ed25519:' and 16 hex digits, got {key_id!r:.40}")
    if not isinstance(value, str):
        raise InvalidInput(f"signature: a base64 string, got {type(value).__name__}")
    _signature_bytes(value)
    return Signature(key_id, algorithm, value)


def _signature_bytes(value: str) -> bytes:
    if len(value) != SIGNATURE_LENGTH or not value.isascii():
        raise InvalidInput(
            f"signature: {SIGNATURE_LENGTH} characters of base64 ({SIGNATURE_BYTES} bytes)"
        )
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("signature: not valid base64") from None
    if len(raw) != SIGNATURE_BYTES or base64.b64encode(raw).decode("ascii") != value:
        raise InvalidInput(f"signature: not {SIGNATURE_BYTES} bytes in canonical base64")
    return raw


def verifies(key: PublicKey, digest: str, signature: Signature) -> bool:
    """Whether ``signature`` is ``key``'s valid signature of ``digest``. A malformed signature,
    another key's or another algorithm's, simply does not."""
    if signature.algorithm != ALGORITHM or signature.key_id != key.key_id:
        return False
    try:
        raw = _signature_bytes(signature.value)
        Ed25519PublicKey.from_public_bytes(key.raw).verify(raw, message(digest))
    except (InvalidInput, InvalidSignature, ValueError):
        return False
    return True


def decide(digest: str, signatures: Sequence[Signature], trusted: Sequence[PublicKey]) -> Verdict:
    """Whether a version with ``digest`` and ``signatures`` may be loaded when only
    ``trusted`` keys count: one valid signature by a trusted key suffices. Otherwise the reason
    says what is missing, most telling first: a trusted key's signature that does not verify
    (tampering, or a digest that changed), then signatures only by untrusted keys, then none."""
    by_id = {key.key_id: key for key in trusted}
    broken: list[str] = []
    for signature in signatures:
        key = by_id.get(signature.key_id)
        if key is None:
            continue
        if verifies(key, digest, signature):
            return Verdict(True, f"trusted by {key.key_id}", key.key_id)
        broken.append(signature.key_id)
    if broken:
        return Verdict(False, f"signature by {', '.join(sorted(set(broken)))} does not verify")
    if signatures:
        ids = ", ".join(sorted({_shown(s.key_id) for s in signatures}))
        return Verdict(False, f"signed only by untrusted keys {ids}")
    return Verdict(False, "unsigned")


def _shown(key_id: str) -> str:
    """A stored key id as a reason may quote it (bounded, printable)."""
    return key_id if KEY_ID_PATTERN.fullmatch(key_id) else repr(key_id[:40])
