"""The follower over a real registry, with MLflow's side as a fake source (a unit seam): what it
imports, what it moves, and how it treats versions that fail, are pending, or are unreachable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pitstop.errors import NotFound, Unavailable
from pitstop.packaging.mlflow_import import Follower, Import, Move, Rule
from pitstop.packaging.mlflow_tracking import MlflowVersion
from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import open_registry

URI = "http://mlflow.test:5000"


class FakeTracking:
    """MLflow's registry as data: versions with their folders, aliases, and failures to inject."""

    uri = URI

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions_: dict[str, MlflowVersion] = {}
        self.aliases: dict[str, str] = {}
        self.downloads: list[str] = []
        self.unreachable = False

    def add(self, number: str, *, broken: bool = False, status: str = "READY") -> None:
        folder = self.root / number
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(ONNX)
        (folder / "NOTES").write_text(number)  # a digest of its own
        data = "missing.onnx" if broken else "model.onnx"
        flavors = {"python_function": {"loader_module": "mlflow.onnx"}, "onnx": {"data": data}}
        (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": flavors}))
        self.versions_[number] = MlflowVersion(
            "fraud", number, status, f"models:/m-{number}", f"run{number}", "alice"
        )

    def by_alias(self, name: str, alias: str) -> MlflowVersion:
        if alias not in self.aliases:
            raise NotFound(f"MLflow {name}@{alias}: alias not found")
        return self.versions_[self.aliases[alias]]

    def versions(self, name: str) -> list[MlflowVersion]:
        return list(self.versions_.values())

    def download(self, version: MlflowVersion, target: Path) -> None:
        self.downloads.append(version.version)
        if self.unreachable:
            raise Unavailable("MLflow tracking server: connection refused")
        shutil.copytree(self.root / version.version, target)


ONNX = mf.iris_onnx_bytes(zipmap=False)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with open_registry(tmp_path / "home") as registry:
        yield registry


def test_follow(tmp_path: Path, registry: Registry) -> None:
    tracking = FakeTracking(tmp_path / "mlflow")
    reports: list[str] = []
    follower = Follower(
        tracking, registry, "fraud", "fraud", [Rule("champion", "production")],
        "follower", report=reports.append,
    )  # fmt: skip
    assert follower.tick() == []  # no alias yet: nothing, and the history is not imported
    tracking.add("1")
    assert follower.tick() == []
    tracking.aliases["champion"] = "1"
    assert follower.tick() == [Import("1"), Move("production", 1, "champion", "1")]
    assert registry.aliases("fraud") == {"production": 1}
    (event,) = [e for e in registry.history("fraud") if e.action == "alias.set"]
    assert event.reason == "MLflow fraud@champion → version 1 (run run1, by alice)"
    assert event.actor == "follower"
    assert follower.tick() == []

    # A version that cannot load is reported once, never retried, and nothing moves to it.
    tracking.add("2", broken=True)
    tracking.aliases["champion"] = "2"
    assert follower.tick() == []
    assert follower.tick() == []
    assert tracking.downloads.count("2") == 1
    assert any("fraud/2 cannot be imported" in r and "missing.onnx" in r for r in reports)
    assert registry.aliases("fraud") == {"production": 1}

    # Registered and READY after the newest imported: imported ahead of its promotion. While
    # the store is unreachable it is retried at the next tick, not given up on.
    tracking.add("3")
    tracking.unreachable = True
    assert follower.tick() == []
    tracking.unreachable = False
    assert follower.tick() == [Import("3")]
    assert registry.aliases("fraud") == {"production": 1}
    (three,) = [v for v in registry.versions("fraud") if v.meta["mlflow.version"] == "3"]
    tracking.aliases["champion"] = "3"
    assert follower.tick() == [Move("production", three.number, "champion", "3")]

    # An alias on a version still registering is left alone until it is READY.
    tracking.add("4", status="PENDING_REGISTRATION")
    tracking.aliases["champion"] = "4"
    assert follower.tick() == []
    tracking.versions_["4"] = replace(tracking.versions_["4"], status="READY")
    steps = follower.tick()
    assert [type(step) for step in steps] == [Import, Move]
    # MLflow's alias deleted: pitstop's stays.
    del tracking.aliases["champion"]
    assert follower.tick() == []
    assert registry.aliases("fraud")["production"] == steps[1].version  # type: ignore[union-attr]
