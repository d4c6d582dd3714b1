"""Ed25519 signatures of version digests: key files, signatures, and the trust decision as a
table; the parsers fuzzed (only InvalidInput, in bounded time)."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitstop.errors import InvalidInput
from pitstop.security.signature import (
    DOMAIN,
    MAX_KEY_FILE_BYTES,
    PublicKey,
    Signature,
    decide,
    generate_key,
    key_id_of,
    message,
    parse_private_key,
    parse_public_key,
    parse_signature,
    private_pem,
    read_private_key,
    read_public_key,
    read_trusted_keys,
    sign,
    verifies,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
ALICE, BOB, MALLORY = generate_key(), generate_key(), generate_key()


def test_key_ids_name_the_raw_public_key() -> None:
    assert ALICE.key_id == key_id_of(ALICE.public.raw)
    assert re.fullmatch(r"ed25519:[0-9a-f]{16}", ALICE.key_id)
    assert ALICE.key_id != BOB.key_id
    assert ALICE.public.pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert ALICE.seed.hex() not in repr(ALICE)


def test_pem_files_round_trip(tmp_path: Path) -> None:
    (tmp_path / "a.key").write_bytes(private_pem(ALICE))
    (tmp_path / "a.pub").write_text(ALICE.public.pem)
    assert read_private_key(tmp_path / "a.key") == ALICE
    assert read_public_key(tmp_path / "a.pub") == ALICE.public
    assert b"BEGIN PRIVATE KEY" in private_pem(ALICE)  # PKCS#8


def test_the_signed_message_is_the_digest_after_a_domain_separator() -> None:
    assert message(D1) == b"pitstop-signature-v1\n" + D1.encode() == DOMAIN + D1.encode()
    signature = sign(ALICE, D1)
    assert signature == sign(ALICE, D1)  # deterministic
    assert (signature.key_id, signature.algorithm) == (ALICE.key_id, "ed25519")
    assert len(signature.value) == 88
    assert len(base64.b64decode(signature.value)) == 64
    assert verifies(ALICE.public, D1, signature)
    assert not verifies(ALICE.public, D2, signature)
    assert not verifies(BOB.public, D1, signature)
    for digest in ("", "sha256:" + "A" * 64, "sha256:abc", "md5:" + "1" * 64, D1 + "\n"):
        with pytest.raises(InvalidInput, match="digest"):
            message(digest)


def _tampered(signature: Signature, **changes: str) -> Signature:
    return Signature(**{**vars(signature), **changes})


def _flip(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


S_A1, S_B1, S_M1 = sign(ALICE, D1), sign(BOB, D1), sign(MALLORY, D1)


@pytest.mark.parametrize(
    ("signatures", "trusted", "expected"),
    [
        ([], [ALICE.public], (False, "unsigned")),
        ([S_A1], [ALICE.public], (True, f"trusted by {ALICE.key_id}")),
        ([S_M1, S_A1], [ALICE.public], (True, f"trusted by {ALICE.key_id}")),
        ([S_A1], [BOB.public, ALICE.public], (True, f"trusted by {ALICE.key_id}")),
        ([S_M1], [ALICE.public], (False, f"signed only by untrusted keys {MALLORY.key_id}")),
        (
            [S_M1, S_B1],
            [ALICE.public],
            (False, "signed only by untrusted keys " + ", ".join(sorted([MALLORY.key_id,
                                                                        BOB.key_id]))),
        ),
        # A signature of another digest by a trusted key: tampering (or a digest that changed).
        ([sign(ALICE, D2)], [ALICE.public],
         (False, f"signature by {ALICE.key_id} does not verify")),
        ([_tampered(S_A1, value=_flip(S_A1.value))], [ALICE.public],
         (False, f"signature by {ALICE.key_id} does not verify")),
        ([_tampered(S_A1, value="not base64")], [ALICE.public],
         (False, f"signature by {ALICE.key_id} does not verify")),
        ([_tampered(S_A1, algorithm="rsa")], [ALICE.public],
         (False, f"signature by {ALICE.key_id} does not verify")),
        # Mallory copies Alice's signature but names her own key: it verifies for nobody.
        ([_tampered(S_A1, key_id=MALLORY.key_id)], [ALICE.public],
         (False, f"signed only by untrusted keys {MALLORY.key_id}")),
        # Mallory's signature stored under Alice's key id does not verify with Alice's key.
        ([_tampered(S_M1, key_id=ALICE.key_id)], [ALICE.public],
         (False, f"signature by {ALICE.key_id} does not verify")),
        # One good trusted signature suffices, whatever else is there.
        ([sign(ALICE, D2), S_B1], [ALICE.public, BOB.public], (True, f"trusted by {BOB.key_id}")),
        ([Signature("x" * 500, "ed25519", "y")], [ALICE.public],
         (False, "signed only by untrusted keys '" + "x" * 40 + "'")),
    ],
)  # fmt: skip
def test_the_trust_decision(
    signatures: list[Signature], trusted: list[PublicKey], expected: tuple[bool, str]
) -> None:
    verdict = decide(D1, signatures, trusted)
    assert (verdict.trusted, verdict.reason) == expected
    assert (verdict.key_id is not None) == verdict.trusted


def _pem_of(key: object) -> tuple[bytes, bytes]:
    private = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # fmt: skip
    public = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA"),
        (ec.generate_private_key(ec.SECP256R1()), "EC"),
        (ed448.Ed448PrivateKey.generate(), "Ed448"),
    ],
)
def test_other_algorithms_are_refused_naming_the_file(
    tmp_path: Path, key: object, kind: str
) -> None:
    private, public = _pem_of(key)
    (tmp_path / "other.key").write_bytes(private)
    (tmp_path / "other.pub").write_bytes(public)
    with pytest.raises(InvalidInput, match=rf"other\.pub: not an Ed25519 key \({kind}\)"):
        read_public_key(tmp_path / "other.pub")
    with pytest.raises(InvalidInput, match=rf"other\.key: not an Ed25519 key \({kind}\)"):
        read_private_key(tmp_path / "other.key")


def test_bad_key_files_are_one_clear_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "a.key").write_bytes(private_pem(ALICE))
    (tmp_path / "big.pub").write_bytes(b"x" * (MAX_KEY_FILE_BYTES + 1))
    (tmp_path / "junk.pub").write_text(
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    (tmp_path / "locked.key").write_bytes(
        Ed25519PrivateKey.from_private_bytes(ALICE.seed).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )  # fmt: skip
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: read_public_key(tmp_path / "missing.pub"), "missing.pub: cannot read"),
        (lambda: read_public_key(tmp_path / "big.pub"), "big.pub: larger than 65536 bytes"),
        (lambda: read_public_key(tmp_path / "junk.pub"), "junk.pub: not a PEM public key"),
        (lambda: read_public_key(tmp_path / "a.key"), "a.key: a private key"),
        (lambda: read_private_key(tmp_path / "locked.key"), "locked.key: an encrypted"),
        (lambda: read_private_key(tmp_path / "junk.pub"), "junk.pub: not a PEM private key"),
        (lambda: read_public_key(tmp_path), "cannot read"),
    ]
    for call, expected in cases:
        with pytest.raises(InvalidInput, match=expected.replace(".", r"\.")):
            call()


def test_trusted_keys_are_files_or_folders_of_pub_files(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "alice.pub").write_text(ALICE.public.pem)
    (folder / "bob.pub").write_text(BOB.public.pem)
    (folder / "alice-again.pub").write_text(ALICE.public.pem)
    (folder / "README").write_text("not a key")
    (tmp_path / "mallory.pem").write_text(MALLORY.public.pem)
    keys = read_trusted_keys([folder, tmp_path / "mallory.pem"])
    assert {k.key_id for k in keys} == {ALICE.key_id, BOB.key_id, MALLORY.key_id}
    assert len(keys) == 3
    (tmp_path / "empty").mkdir()
    assert read_trusted_keys([tmp_path / "empty"]) == ()
    (folder / "broken.pub").write_text("nope")
    with pytest.raises(InvalidInput, match=r"broken\.pub"):
        read_trusted_keys([folder])


@pytest.mark.parametrize(
    ("key_id", "algorithm", "value", "expected"),
    [
        (ALICE.key_id, "ed25519", S_A1.value, None),
        (ALICE.key_id, "rsa", S_A1.value, "algorithm"),
        (ALICE.key_id, None, S_A1.value, "algorithm"),
        ("ed25519:XYZ", "ed25519", S_A1.value, "key id"),
        (ALICE.key_id.upper(), "ed25519", S_A1.value, "key id"),
        (ALICE.key_id, "ed25519", S_A1.value[:-2], "88 characters"),
        (ALICE.key_id, "ed25519", S_A1.value + "A", "88 characters"),
        (ALICE.key_id, "ed25519", "!" * 88, "base64"),
        (ALICE.key_id, "ed25519", "é" * 88, "88 characters"),
        (ALICE.key_id, "ed25519", base64.b64encode(b"x" * 65).decode()[:88], "base64"),
        (ALICE.key_id, "ed25519", S_A1.value[:85] + "B==", "canonical"),  # non-zero pad bits
        (ALICE.key_id, "ed25519", 42, "base64 string"),
    ],
)
def test_signature_values_are_parsed_strictly(
    key_id: object, algorithm: object, value: object, expected: str | None
) -> None:
    if expected is None:
        assert parse_signature(key_id, algorithm, value) == S_A1
        return
    with pytest.raises(InvalidInput, match=expected):
        parse_signature(key_id, algorithm, value)


# -- fuzzing: whatever the bytes, InvalidInput or a value, quickly -------------------------------

PEM_LIKE = st.one_of(
    st.binary(max_size=2048),
    st.builds(
        lambda head, body, tail: head + body + tail,
        st.sampled_from([b"-----BEGIN PUBLIC KEY-----\n", b"-----BEGIN PRIVATE KEY-----\n", b""]),
        st.one_of(
            st.binary(max_size=512),
            st.binary(max_size=96).map(lambda b: base64.encodebytes(b)),
            st.just(base64.encodebytes(ALICE.public.pem.encode()[:40])),
        ),
        st.sampled_from([b"-----END PUBLIC KEY-----\n", b"-----END PRIVATE KEY-----\n", b""]),
    ),
    # Real keys with one byte changed.
    st.tuples(
        st.sampled_from([ALICE.public.pem.encode(), private_pem(ALICE)]),
        st.integers(0, 200),
        st.integers(0, 255),
    ).map(lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]),
)

FUZZ = settings(
    max_examples=400, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


@FUZZ
@given(data=PEM_LIKE)
def test_key_parsers_only_raise_invalid_input(data: bytes) -> None:
    began = time.monotonic()
    for parse in (parse_public_key, parse_private_key):
        try:
            key = parse(data, "fuzz.pem")
        except InvalidInput as exc:
            message_ = str(exc)
        else:
            message_ = "fuzz.pem: " + key.key_id
        assert message_.startswith("fuzz.pem: ")
    assert time.monotonic() - began < 1.0


@FUZZ
@given(
    key_id=st.one_of(st.text(max_size=40), st.just(ALICE.key_id), st.none(), st.integers()),
    algorithm=st.one_of(st.just("ed25519"), st.text(max_size=10), st.binary(max_size=8)),
    value=st.one_of(
        st.text(max_size=200),
        st.text(alphabet="ABCDEFabcdef0123456789+/=", min_size=86, max_size=90),
        st.binary(min_size=60, max_size=68).map(lambda b: base64.b64encode(b).decode()),
        st.binary(max_size=100),
    ),
)
def test_signature_parser_and_verification_only_raise_invalid_input(
    key_id: object, algorithm: object, value: object
) -> None:
    began = time.monotonic()
    try:
        parsed = parse_signature(key_id, algorithm, value)
    except InvalidInput:
        pass
    else:
        assert not verifies(ALICE.public, D1, parsed)  # random bytes never verify
    if isinstance(key_id, str) and isinstance(algorithm, str) and isinstance(value, str):
        verdict = decide(D1, [Signature(key_id, algorithm, value)], [ALICE.public])
        assert not verdict.trusted
    assert time.monotonic() - began < 1.0
