"""Signatures in the registry: kept as given (never verified here), one per key and version, a
catalog change each (generation, ``version.sign`` audit); ``trust.policy`` recorded on change."""

from __future__ import annotations

import pytest

from pitstop.errors import Conflict, InvalidInput, ModelNotFound, VersionNotFound
from pitstop.registry import Registry
from tests.registry.conftest import MakePackage

SIG = "A" * 86 + "=="
PEM = "-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n"


def test_signatures_are_stored_listed_and_audited(
    registry: Registry, make_package: MakePackage
) -> None:
    v1 = registry.push(make_package("a"), name="fraud", actor="ana").version
    registry.push(make_package("b"), name="fraud", actor="ana")
    before = registry.generation()
    stored = registry.signatures.add(
        "fraud", 1, key_id="ed25519:00000000000000aa", algorithm="ed25519", public_key=PEM,
        signature=SIG, actor="release-bot", reason="release 1.2",
    )  # fmt: skip
    assert stored is True
    assert registry.generation() == before + 1  # servers re-read: a FAILED version is retried
    registry.signatures.add(
        "fraud", 2, key_id="ed25519:00000000000000bb", algorithm="ed25519", public_key=PEM,
        signature=SIG, actor="ana",
    )  # fmt: skip
    [first] = registry.signatures.of("fraud", 1)
    assert (first.model, first.version, first.digest) == ("fraud", 1, v1.digest)
    assert (first.key_id, first.algorithm, first.signature) == ("ed25519:00000000000000aa",
                                                                "ed25519", SIG)  # fmt: skip
    assert (first.public_key, first.signed_by) == (PEM, "release-bot")
    assert [s.version for s in registry.signatures.of("fraud")] == [1, 2]
    assert registry.signatures.of("fraud", 7) == []
    [event] = [e for e in registry.history("fraud") if e.action == "version.sign"][-1:]
    assert (event.actor, event.version, event.reason) == ("release-bot", 1, "release 1.2")
    assert event.after == {"key_id": "ed25519:00000000000000aa", "algorithm": "ed25519",
                           "digest": v1.digest}  # fmt: skip


def test_the_same_signature_again_changes_nothing_and_another_conflicts(
    registry: Registry, make_package: MakePackage
) -> None:
    registry.push(make_package(), name="fraud", actor="ana")
    add = {"key_id": "ed25519:00000000000000aa", "algorithm": "ed25519", "public_key": PEM}
    registry.signatures.add("fraud", 1, **add, signature=SIG, actor="ana")
    generation, events = registry.generation(), len(registry.history())
    assert registry.signatures.add("fraud", 1, **add, signature=SIG, actor="bob") is False
    assert (registry.generation(), len(registry.history())) == (generation, events)
    with pytest.raises(Conflict, match="another signature by ed25519:00000000000000aa"):
        registry.signatures.add("fraud", 1, **add, signature="B" * 86 + "==", actor="bob")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"key_id": ""}, "key id"),
        ({"key_id": "a b"}, "key id"),
        ({"key_id": "k" * 129}, "key id"),
        ({"algorithm": "Ed25519!"}, "algorithm"),
        ({"signature": ""}, "signature"),
        ({"signature": "x" * 513}, "signature"),
        ({"signature": "line\nbreak"}, "signature"),
        ({"public_key": "x" * 20_000}, "public key"),
        ({"actor": ""}, "actor"),
    ],
)
def test_malformed_values_are_refused(
    registry: Registry, make_package: MakePackage, change: dict[str, str], expected: str
) -> None:
    registry.push(make_package(), name="fraud", actor="ana")
    values = {"key_id": "ed25519:00000000000000aa", "algorithm": "ed25519", "public_key": PEM,
              "signature": SIG, "actor": "ana", **change}  # fmt: skip
    with pytest.raises(InvalidInput, match=expected):
        registry.signatures.add("fraud", 1, **values)
    assert registry.signatures.of("fraud") == []


def test_unknown_models_and_versions(registry: Registry, make_package: MakePackage) -> None:
    registry.push(make_package(), name="fraud", actor="ana")
    values = {"key_id": "ed25519:00000000000000aa", "algorithm": "ed25519", "public_key": PEM,
              "signature": SIG, "actor": "ana"}  # fmt: skip
    with pytest.raises(VersionNotFound):
        registry.signatures.add("fraud", 2, **values)
    with pytest.raises(ModelNotFound):
        registry.signatures.add("nope", 1, **values)
    with pytest.raises(ModelNotFound):
        registry.signatures.of("nope")


def test_trust_policies_are_recorded_when_they_change(registry: Registry) -> None:
    generation = registry.generation()
    assert registry.signatures.record_trust(["ed25519:b", "ed25519:a"], actor="server:r1")
    assert not registry.signatures.record_trust(["ed25519:a", "ed25519:b"], actor="server:r2")
    assert registry.signatures.record_trust(["ed25519:a"], actor="server:r2")
    assert registry.generation() == generation  # no catalog change: nobody reloads
    events = [e for e in registry.history() if e.action == "trust.policy"]
    assert [(e.actor, e.before, e.after) for e in events] == [
        ("server:r2", {"keys": ["ed25519:a", "ed25519:b"]}, {"keys": ["ed25519:a"]}),
        ("server:r1", None, {"keys": ["ed25519:a", "ed25519:b"]}),
    ]
