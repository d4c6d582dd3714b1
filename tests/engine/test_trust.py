"""The server's trust policy: trusted keys read at start (clear errors), the check before a
version's files are touched, a refusal that is FAILED at once (never retried) while the previous
version keeps serving, and the ``trust.policy`` record of an Engine's start."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from pitstop.engine import Engine
from pitstop.engine.trust import SignaturePolicy, signature_policy, trusted_keys
from pitstop.errors import InvalidInput, LoadError
from pitstop.registry import SignatureRecord, VersionRecord
from pitstop.security.signature import generate_key, sign
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.loader import Loaded, VersionLoader, failure_reason, is_transient
from pitstop.serving.manager import ManagerOptions, ModelManager
from pitstop.serving.version_policy import VersionState
from pitstop.settings import Settings
from tests.serving.fakes import FakeLoader, FakeSource, record

pytestmark = pytest.mark.timeout(30)

ALICE, MALLORY = generate_key(), generate_key()


def stored(rec: VersionRecord, *keys: object) -> list[SignatureRecord]:
    rows = []
    for key in keys:
        s = sign(key, rec.digest)  # type: ignore[arg-type]
        rows.append(
            SignatureRecord(
                rec.model,
                rec.number,
                rec.digest,
                s.key_id,
                s.algorithm,
                s.value,
                "",
                "ana",
                rec.created_at,
            )
        )
    return rows


def test_the_policy_passes_trusted_versions_and_explains_refusals() -> None:
    v1, v2, v3 = record("fraud", 1), record("fraud", 2), record("fraud", 3)
    table = {1: stored(v1, ALICE), 2: [], 3: stored(v3, MALLORY)}
    policy = SignaturePolicy([ALICE.public], lambda _model, number: table[number])
    policy.check(v1)
    with pytest.raises(LoadError) as unsigned:
        policy.check(v2)
    assert str(unsigned.value) == (
        "fraud v2 is not signed by a trusted key (PITSTOP_REQUIRE_SIGNATURE): unsigned"
    )
    with pytest.raises(LoadError, match=f"signed only by untrusted keys {MALLORY.key_id}"):
        policy.check(v3)
    assert not is_transient(unsigned.value)  # FAILED at once, never retried
    assert failure_reason(unsigned.value) == str(unsigned.value)


def test_trusted_keys_are_read_at_start_with_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "alice.pub").write_text(ALICE.public.pem)
    (tmp_path / "empty").mkdir()
    (tmp_path / "rsa.pub").write_text(
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    )
    ok = Settings(home=tmp_path, require_signature=True, trusted_keys=[tmp_path / "alice.pub"])
    assert [k.key_id for k in trusted_keys(ok)] == [ALICE.key_id]
    cases = [
        (Settings(home=tmp_path, require_signature=True), "PITSTOP_TRUSTED_KEYS is empty"),
        (Settings(home=tmp_path, require_signature=True, trusted_keys=[tmp_path / "empty"]),
         "names no public key"),
        (Settings(home=tmp_path, require_signature=True, trusted_keys=[tmp_path / "none"]),
         "PITSTOP_TRUSTED_KEYS: .*none: cannot read"),
        (Settings(home=tmp_path, trusted_keys=[tmp_path / "rsa.pub"]),
         r"PITSTOP_TRUSTED_KEYS: .*rsa\.pub: not a PEM public key"),
    ]  # fmt: skip
    for settings, expected in cases:
        with pytest.raises(InvalidInput, match=expected):
            trusted_keys(settings)
    off = Settings(home=tmp_path, trusted_keys=[tmp_path / "alice.pub"])
    assert signature_policy(off, trusted_keys(off), lambda _m, _n: []) is None


async def test_the_check_runs_before_any_file_is_fetched() -> None:
    fetched: list[int] = []

    def fetch(rec: VersionRecord) -> Path:
        fetched.append(rec.number)
        raise LoadError("fetched")

    policy = SignaturePolicy([ALICE.public], lambda _m, _n: [])
    loader = VersionLoader(fetch, timeout_s=5, runtime_threads=1, warmup_runs=0, trust=policy)
    with pytest.raises(LoadError, match="unsigned"):
        await loader.load(record("fraud", 1))
    assert fetched == []


class TrustingLoader(FakeLoader):
    """The fake loader behind a trust policy, as the Engine wires the real one."""

    def __init__(self, policy: SignaturePolicy) -> None:
        super().__init__()
        self.policy = policy
        self.checks: Counter[int] = Counter()

    async def load(self, loaded: VersionRecord) -> Loaded:
        self.checks[loaded.number] += 1
        await asyncio.to_thread(self.policy.check, loaded)
        return await super().load(loaded)


async def test_an_unsigned_version_fails_and_the_previous_one_keeps_serving() -> None:
    source = FakeSource()
    source.set_alias("fraud", "production", 1)
    signed = {1: stored(record("fraud", 1), ALICE), 2: [], 3: stored(record("fraud", 3), MALLORY)}
    loader = TrustingLoader(SignaturePolicy([ALICE.public], lambda _m, n: signed.get(n, [])))
    options = ManagerOptions(replica="t", warmup_runs=0, retry_backoff_s=0.001)
    manager = ModelManager(source, options, loader)

    async def settle(number: int) -> LoadedVersion:
        async with asyncio.timeout(5):
            while True:
                await manager.refresh()
                found = [v for v in manager.versions_of("fraud") if v.key.version == number]
                if found and found[0].state in (VersionState.READY, VersionState.FAILED):
                    return found[0]
                await asyncio.sleep(0.005)

    try:
        assert (await settle(1)).state is VersionState.READY
        for number, reason in ((2, "unsigned"), (3, f"untrusted keys {MALLORY.key_id}")):
            source.set_alias("fraud", "production", number)
            failed = await settle(number)
            assert failed.state is VersionState.FAILED
            assert failed.error is not None
            assert failed.error.startswith(f"fraud v{number} is not signed by a trusted key")
            assert failed.error.endswith(reason)
            assert ("fraud", number) not in loader.attempts  # refused before the (fake) load
            assert loader.checks[number] == 1  # and never retried
            with manager.lease("fraud", None) as serving:
                assert serving.record.number == 1  # v1 keeps serving
        # Signing v3 with the trusted key (a registry change) retries it.
        signed[3] = stored(record("fraud", 3), ALICE)
        source.touch()
        assert (await settle(3)).state is VersionState.READY
        with manager.lease("fraud", None) as serving:
            assert serving.record.number == 3
    finally:
        await manager.close()


async def test_an_engine_start_records_the_trusted_keys(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "alice.pub").write_text(ALICE.public.pem)
    settings = Settings(
        home=tmp_path, require_signature=True, trusted_keys=[tmp_path / "keys"],
        replica="r1", drift_enabled=False, rollout_controller=False,
    )  # fmt: skip
    for _ in range(2):  # the second start trusts the same keys: nothing new to record
        async with Engine(settings) as engine:
            events = await asyncio.to_thread(engine.registry.history)
    assert [(e.action, e.actor, e.after) for e in events if e.action == "trust.policy"] == [
        ("trust.policy", "server:r1", {"keys": [ALICE.key_id]})
    ]
    with pytest.raises(InvalidInput, match="PITSTOP_TRUSTED_KEYS is empty"):
        await Engine(Settings(home=tmp_path, require_signature=True)).start()
