"""The Registry against SQLite and PostgreSQL: versions, aliases, history, integrity, states."""

from __future__ import annotations

import os
import re
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pitstop.errors import (
    ArtifactIntegrityError,
    Conflict,
    InvalidInput,
    ModelNotFound,
    VersionNotFound,
)
from pitstop.registry import Registry

from .conftest import MakePackage


def test_push_records_an_immutable_version(registry: Registry, make_package: MakePackage) -> None:
    folder = make_package()
    result = registry.push(
        folder, name="fraud", actor="ana", meta={"run_id": "r1"}, reason="first model"
    )
    version = result.version
    assert result.created
    assert (version.model, version.number, version.runtime) == ("fraud", 1, "onnx")
    assert version.digest.startswith("sha256:")
    assert [entry.path for entry in version.files] == ["model.onnx", "pitstop.yaml"]
    assert version.size_bytes == sum(entry.size for entry in version.files)
    assert version.meta == {"run_id": "r1"}
    assert (version.trust_pickle, version.trust_code, version.created_by) == (False, False, "ana")
    assert version.created_at.tzinfo is not None
    assert version.created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - version.created_at) < timedelta(minutes=1)
    assert version.manifest.artifact == "model.onnx"
    assert registry.version("fraud", 1) == version
    assert registry.versions("fraud") == [version]


def test_identical_push_returns_the_existing_version(
    registry: Registry, make_package: MakePackage
) -> None:
    folder = make_package()
    first = registry.push(folder, name="fraud", actor="ana", meta={"run_id": "r1"})
    generation = registry.generation()
    again = registry.push(folder, name="fraud", actor="bob", meta={"run_id": "r2"})
    assert not again.created
    assert again.version == first.version  # meta unchanged: versions are immutable
    assert registry.generation() == generation  # nothing changed
    assert len(registry.history("fraud")) == 2  # model.create, version.create
    with_alias = registry.push(folder, name="fraud", actor="bob", aliases=["production"])
    assert not with_alias.created
    assert registry.aliases("fraud") == {"production": 1}


def test_same_content_with_other_trust_flags_is_a_conflict(
    registry: Registry, make_package: MakePackage
) -> None:
    folder = make_package()
    registry.push(folder, name="fraud", actor="ana")
    with pytest.raises(Conflict, match="already holds this content as v1"):
        registry.push(folder, name="fraud", actor="ana", trust_pickle=True)


def test_version_numbers_are_monotonic_per_model(
    registry: Registry, make_package: MakePackage
) -> None:
    numbers = [
        registry.push(make_package(f"p{i}"), name="fraud", actor="ana").version.number
        for i in range(3)
    ]
    assert numbers == [1, 2, 3]
    other = registry.push(make_package("p0-again", files={"model.onnx": b"fake onnx p0"}),
                          name="churn", actor="ana")  # fmt: skip
    assert other.version.number == 1  # same content, other model: its own numbering
    assert [v.number for v in registry.versions("fraud")] == [3, 2, 1]
    assert registry.version("fraud", "latest").number == 3
    assert registry.version("fraud", "2").number == 2


def test_lookups_explain_what_is_missing(registry: Registry, make_package: MakePackage) -> None:
    registry.push(make_package(), name="fraud", actor="ana")
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        registry.version("nope", 1)
    with pytest.raises(ModelNotFound):
        registry.versions("nope")
    with pytest.raises(VersionNotFound, match="model 'fraud' has no version 7"):
        registry.version("fraud", 7)
    with pytest.raises(VersionNotFound, match="model 'fraud' has no alias 'staging'"):
        registry.version("fraud", "staging")


def test_aliases_set_move_delete_with_audit(registry: Registry, make_package: MakePackage) -> None:
    registry.push(make_package("a"), name="fraud", actor="ana", aliases=["staging"])
    registry.push(make_package("b"), name="fraud", actor="ana")
    registry.set_alias("fraud", "production", 1, actor="bob", reason="go live")
    registry.set_alias("fraud", "production", 2, actor="cy", reason="v2 is better")
    assert registry.aliases("fraud") == {"production": 2, "staging": 1}
    assert registry.version("fraud", "production").number == 2
    count = len(registry.history())
    registry.set_alias("fraud", "production", 2, actor="cy")  # unchanged: no event
    assert len(registry.history()) == count
    registry.delete_alias("fraud", "staging", actor="dee", reason="unused")
    assert registry.aliases("fraud") == {"production": 2}

    events = registry.history("fraud", limit=3)
    assert [(e.action, e.actor, e.alias, e.before, e.after, e.reason) for e in events] == [
        ("alias.delete", "dee", "staging", {"version": 1}, None, "unused"),
        ("alias.set", "cy", "production", {"version": 1}, {"version": 2}, "v2 is better"),
        ("alias.set", "bob", "production", None, {"version": 1}, "go live"),
    ]
    with pytest.raises(VersionNotFound, match="model 'fraud' has no version 9"):
        registry.set_alias("fraud", "production", 9, actor="bob")
    with pytest.raises(VersionNotFound, match="has no alias 'staging'"):
        registry.delete_alias("fraud", "staging", actor="bob")
    with pytest.raises(ModelNotFound):
        registry.set_alias("nope", "production", 1, actor="bob")


@pytest.mark.parametrize("alias", ["latest", "42", "-x", "a b", "x" * 129, ""])
def test_bad_alias_names_are_refused(
    registry: Registry, make_package: MakePackage, alias: str
) -> None:
    registry.push(make_package(), name="fraud", actor="ana")
    with pytest.raises(InvalidInput, match="alias"):
        registry.set_alias("fraud", alias, 1, actor="ana")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "model name 'bad name'"),
        ({"name": "m", "meta": {"accuracy": 0.9}}, r"meta\['accuracy'\]: values must be strings"),
        ({"name": "m", "actor": ""}, "actor"),
        ({"name": "m", "aliases": ["latest"]}, "alias 'latest': reserved"),
    ],
)
def test_push_validates_its_arguments(
    registry: Registry, make_package: MakePackage, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"actor": "ana", **kwargs}
    with pytest.raises(InvalidInput, match=message):
        registry.push(make_package(), **arguments)  # type: ignore[arg-type]
    assert registry.models() == []


def test_invalid_manifest_registers_nothing(registry: Registry, make_package: MakePackage) -> None:
    bad_input = {"name": "x", "datatype": "FP33", "shape": [1]}
    folder = make_package(
        manifest={"runtime": "onnx", "artifact": "model.onnx", "inputs": [bad_input]}
    )
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.datatype: unknown datatype 'FP33'"):
        registry.push(folder, name="fraud", actor="ana")
    assert registry.models() == []
    assert registry.history() == []


def test_history_is_newest_first_and_filterable(
    registry: Registry, make_package: MakePackage
) -> None:
    registry.push(make_package("a"), name="fraud", actor="ana", reason="why not")
    registry.push(make_package("b"), name="churn", actor="bob")
    events = registry.history()
    assert [(e.action, e.model) for e in events] == [
        ("version.create", "churn"),
        ("model.create", "churn"),
        ("version.create", "fraud"),
        ("model.create", "fraud"),
    ]
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    created = events[2]
    assert (created.actor, created.reason, created.version) == ("ana", "why not", 1)
    assert created.after is not None
    assert created.after["number"] == 1
    assert created.after["runtime"] == "onnx"
    assert created.after["trust_pickle"] is False
    assert all(e.at.tzinfo is not None for e in events)
    assert [e.model for e in registry.history("fraud")] == ["fraud", "fraud"]
    assert registry.history("unknown") == []
    assert len(registry.history(limit=1)) == 1
    assert registry.history(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(registry.history(since=datetime.now(UTC) - timedelta(hours=1))) == 4


def test_generation_increases_with_every_change(
    registry: Registry, make_package: MakePackage
) -> None:
    seen = [registry.generation()]
    registry.push(make_package("a"), name="fraud", actor="ana")
    seen.append(registry.generation())
    registry.push(make_package("b"), name="fraud", actor="ana")
    seen.append(registry.generation())
    registry.set_alias("fraud", "production", 1, actor="ana")
    seen.append(registry.generation())
    registry.set_alias("fraud", "production", 2, actor="ana")
    seen.append(registry.generation())
    registry.delete_alias("fraud", "production", actor="ana")
    seen.append(registry.generation())
    assert seen == sorted(set(seen))
    registry.record_serving_state("r1", "fraud", 1, "sha256:x", "READY")
    assert registry.generation() == seen[-1]  # serving states are not catalog changes


def test_models_and_snapshot(registry: Registry, make_package: MakePackage) -> None:
    one = registry.push(make_package("a"), name="fraud", actor="ana", aliases=["production"])
    two = registry.push(make_package("b"), name="fraud", actor="ana", aliases=["staging"])
    registry.push(make_package("c"), name="churn", actor="ana")
    models = registry.models()
    assert [(m.name, m.latest_version, m.aliases, m.version_count) for m in models] == [
        ("churn", 1, {}, 1),
        ("fraud", 2, {"production": 1, "staging": 2}, 2),
    ]
    snapshot = registry.snapshot()
    assert snapshot.generation == registry.generation()
    assert snapshot.models == {
        "churn": {},
        "fraud": {"production": one.version, "staging": two.version},
    }
    assert snapshot.latest["fraud"] == two.version
    assert snapshot.latest["churn"].model == "churn"


def test_fetch_verifies_every_file(
    registry: Registry, make_package: MakePackage, tmp_path: Path
) -> None:
    version = registry.push(make_package(), name="fraud", actor="ana").version
    folder = registry.fetch(version)
    assert (folder / "model.onnx").read_bytes() == b"fake onnx pkg"

    target = folder / "model.onnx"
    os.chmod(target, stat.S_IWUSR | stat.S_IRUSR)
    target.write_bytes(b"evil onnx pkg")  # same size, other bytes
    with pytest.raises(
        ArtifactIntegrityError,
        match=re.escape("artifact file 'model.onnx' of fraud v1 does not match"),
    ):
        registry.fetch(version)
    target.unlink()
    with pytest.raises(
        ArtifactIntegrityError, match=re.escape("'model.onnx' of fraud v1 is missing")
    ):
        registry.fetch(version)
    (folder / "model.onnx").write_bytes(b"fake onnx pkg")
    (folder / "extra.py").write_bytes(b"import os")
    with pytest.raises(ArtifactIntegrityError, match=re.escape("unexpected file 'extra.py'")):
        registry.fetch(version)
    (folder / "extra.py").unlink()
    assert registry.fetch(version) == folder


def test_concurrent_pushes_get_distinct_numbers(
    db_url: str, make_package: MakePackage, tmp_path: Path
) -> None:
    packages = [make_package(f"p{i}") for i in range(6)]
    errors: list[BaseException] = []
    numbers: list[int] = []
    with Registry.open(db_url, tmp_path / "artifacts") as registry:
        barrier = threading.Barrier(len(packages))

        def push(folder: Path) -> None:
            try:
                barrier.wait()
                result = registry.push(folder, name="fraud", actor="ana", aliases=["latest-push"])
                numbers.append(result.version.number)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=push, args=(p,)) for p in packages]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
        assert len(registry.history("fraud")) == 1 + 6 + 6  # model, versions, alias moves


def test_concurrent_opens_migrate_once(db_url: str, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_and_close() -> None:
        try:
            barrier.wait()
            with Registry.open(db_url, tmp_path / "artifacts") as registry:
                registry.generation()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_serving_states_upsert(db_url: str, tmp_path: Path) -> None:
    now = [datetime(2030, 1, 1, 12, 0, tzinfo=UTC)]
    with Registry.open(db_url, tmp_path / "artifacts", clock=lambda: now[0]) as registry:
        registry.record_serving_state("r1", "fraud", 2, "sha256:a", "LOADING")
        now[0] += timedelta(seconds=5)
        registry.record_serving_state("r1", "fraud", 2, "sha256:a", "LOADING")
        (state,) = registry.serving_states()
        assert state.since == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)  # same state: since stays
        assert state.updated_at == datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC)
        now[0] += timedelta(seconds=5)
        registry.record_serving_state("r1", "fraud", 2, "sha256:a", "FAILED", error="boom")
        registry.record_serving_state("r2", "fraud", 2, "sha256:a", "READY")
        registry.record_serving_state("r1", "churn", 1, "sha256:b", "READY")
        states = registry.serving_states("fraud")
        assert [(s.replica, s.state, s.error, s.since.second) for s in states] == [
            ("r1", "FAILED", "boom", 10),
            ("r2", "READY", None, 10),
        ]
        registry.clear_serving_states("r1")
        assert [(s.replica, s.model) for s in registry.serving_states()] == [("r2", "fraud")]
