"""Fakes at the Engine's seams: a registry (VersionSource), a runtime and a Loader. They let the
ModelManager and the DataPlane run in milliseconds with no database, no files, no framework."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pitstop.protocol.tensor import TensorSpec
from pitstop.registry import ModelManifest, RegistrySnapshot, TrafficPolicy, VersionRecord
from pitstop.runtimes.base import RuntimeMetadata
from pitstop.serving.loader import Loaded
from pitstop.serving.warmup import WarmupReport

X = TensorSpec("x", "FP32", (-1, 4))
Y = TensorSpec("y", "FP32", (-1, 4))


def record(model: str, number: int) -> VersionRecord:
    return VersionRecord(
        model=model,
        number=number,
        digest=f"sha256:{number:064x}",
        runtime="fake",
        manifest=ModelManifest(runtime="fake", artifact=None, inputs=(X,), outputs=(Y,)),
        files=(),
        size_bytes=0,
        meta={},
        trust_pickle=False,
        trust_code=False,
        created_at=datetime.now(UTC),
        created_by="test",
    )


@dataclass
class FakeSource:
    """An in-memory registry: aliases per model, and a generation bumped by every change."""

    aliases: dict[str, dict[str, int]] = field(default_factory=dict)
    policies: dict[str, TrafficPolicy] = field(default_factory=dict)
    pinned: dict[str, tuple[int, ...]] = field(default_factory=dict)
    states: list[tuple[str, int, str]] = field(default_factory=list)
    registered: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Version numbers with no alias (beyond those aliases and policies name)."""
    _generation: int = 0

    def register(self, model: str, *numbers: int) -> None:
        self.registered[model] = (*self.registered.get(model, ()), *numbers)
        self.aliases.setdefault(model, {})
        self._generation += 1

    def numbers(self, model: str) -> tuple[int, ...]:
        found = {*self.aliases.get(model, {}).values(), *self.pinned.get(model, ())}
        return tuple(sorted(found | set(self.registered.get(model, ()))))

    def version(self, model: str, ref: str | int) -> VersionRecord:
        number = ref if isinstance(ref, int) else self.aliases[model][ref]
        assert number in self.numbers(model), (model, ref)
        return record(model, number)

    def set_alias(self, model: str, alias: str, number: int) -> None:
        self.aliases.setdefault(model, {})[alias] = number
        self._generation += 1

    def set_policy(self, model: str, policy: TrafficPolicy, pinned: tuple[int, ...]) -> None:
        self.policies[model], self.pinned[model] = policy, pinned
        self._generation += 1

    def touch(self) -> None:
        """Any registry change (the operator's cue to retry FAILED versions)."""
        self._generation += 1

    def generation(self) -> int:
        return self._generation

    def snapshot(self) -> RegistrySnapshot:
        return RegistrySnapshot(
            generation=self._generation,
            models={m: {a: record(m, n) for a, n in al.items()} for m, al in self.aliases.items()},
            policies=dict(self.policies),
            pinned={m: {n: record(m, n) for n in ns} for m, ns in self.pinned.items()},
            numbers={m: self.numbers(m) for m in self.aliases},
        )

    def fetch(self, _record: VersionRecord) -> Path:
        raise AssertionError("the fake loader never fetches")

    def trim_local_copies(self, _keep: object) -> None:
        return None

    def listen(self, _on_change: object) -> None:
        return None  # polled, like SQLite

    def record_serving_state(
        self, _replica: str, model: str, version: int, _digest: str, state: str, _e: str | None
    ) -> None:
        self.states.append((model, version, state))


class FakeRuntime:
    """Multiplies ``x`` by the version number; ``gate`` (when set) holds every predict until it
    is opened; ``fail`` makes predict raise."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.gate: threading.Event | None = None
        self.fail = False
        self.unloaded = threading.Event()
        self.calls = 0

    def load(self) -> None:
        pass

    def metadata(self) -> RuntimeMetadata:
        return RuntimeMetadata("fake", (X,), (Y,))

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(10), "the gate was never opened"
        if self.fail:
            raise RuntimeError("the model failed")
        return {"y": (inputs["x"] * self.factor).astype(np.float32)}

    def unload(self) -> None:
        self.unloaded.set()


@dataclass
class FakeLoader:
    """Loads FakeRuntimes; ``failures[(model, number)]`` lists exceptions the next loads of that
    version raise, one per attempt, before it loads."""

    failures: dict[tuple[str, int], list[Exception]] = field(default_factory=dict)
    runtimes: dict[tuple[str, int], FakeRuntime] = field(default_factory=dict)
    attempts: dict[tuple[str, int], int] = field(default_factory=dict)

    async def load(self, loaded: VersionRecord) -> Loaded:
        key = (loaded.model, loaded.number)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        pending = self.failures.get(key)
        if pending:
            raise pending.pop(0)
        runtime = FakeRuntime(loaded.number)
        self.runtimes[key] = runtime
        return runtime, runtime.metadata(), WarmupReport(1, True, 0)
