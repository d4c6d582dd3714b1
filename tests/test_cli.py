"""The ``pitstop`` command line, run as a real subprocess against a SQLite registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import model_factory as mf


def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PITSTOP_HOME": str(home), "PITSTOP_ACTOR": "alice"}
    result = subprocess.run(
        [sys.executable, "-m", "pitstop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if ok:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    src = tmp_path_factory.mktemp("pkgs")
    return {
        "a": mf.make_sklearn_package(src / "a"),
        "b": mf.make_onnx_package(src / "b"),
    }


def test_push_list_versions_alias_history(tmp_path: Path, packages: dict[str, Path]) -> None:
    pushed = json.loads(
        run(
            tmp_path,
            "models",
            "push",
            str(packages["a"]),
            "--name",
            "fraud",
            "--alias",
            "staging",
            "--meta",
            "run_id=abc",
            "--json",
        ).stdout
    )
    assert pushed["created"] is True
    assert pushed["number"] == 1
    assert pushed["meta"]["run_id"] == "abc"
    again = json.loads(
        run(tmp_path, "models", "push", str(packages["a"]), "--name", "fraud", "--json").stdout
    )
    assert again["created"] is False
    assert again["number"] == 1
    run(tmp_path, "models", "push", str(packages["b"]), "--name", "fraud")
    run(tmp_path, "alias", "set", "fraud", "production", "2", "--reason", "better auc")

    models = json.loads(run(tmp_path, "models", "list", "--json").stdout)
    assert [(m["name"], m["latest_version"]) for m in models] == [("fraud", 2)]
    assert models[0]["aliases"] == {"production": 2, "staging": 1}

    versions = json.loads(run(tmp_path, "versions", "fraud", "--json").stdout)
    assert [v["number"] for v in versions] == [2, 1]
    assert versions[0]["runtime"] == "onnx"
    assert versions[0]["digest"] != versions[1]["digest"]
    assert [v["aliases"] for v in versions] == [["production"], ["staging"]]  # as the table

    events = json.loads(run(tmp_path, "history", "fraud", "--json").stdout)
    assert events[0]["action"] == "alias.set"
    assert events[0]["alias"] == "production"
    assert events[0]["after"]["version"] == 2
    assert events[0]["reason"] == "better auc"
    assert {e["actor"] for e in events} == {"alice"}
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)

    table = run(tmp_path, "versions", "fraud").stdout
    assert "run_id=abc" in table
    assert "production" in table

    status = json.loads(run(tmp_path, "status", "--json").stdout)
    rows = {(r["model"], r["alias"]): r for r in status}
    assert rows[("fraud", "production")]["target"] == 2
    assert rows[("fraud", "production")]["state"] == "NOT LOADED"


def test_failures_exit_non_zero_with_one_line(tmp_path: Path, packages: dict[str, Path]) -> None:
    missing = run(tmp_path, "versions", "ghost", ok=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0
    assert "ghost" in missing.stderr
    run(tmp_path, "models", "push", str(packages["a"]), "--name", "m")
    bad_alias = run(tmp_path, "alias", "set", "m", "production", "7", ok=False)
    assert bad_alias.returncode == 1
    assert "7" in bad_alias.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    no_manifest = run(tmp_path, "models", "push", str(empty), "--name", "m", ok=False)
    assert no_manifest.returncode == 1
    assert "pitstop.yaml" in no_manifest.stderr
    bad_meta = run(
        tmp_path, "models", "push", str(packages["a"]), "--name", "m", "--meta", "novalue", ok=False
    )
    assert bad_meta.returncode != 0
    assert "KEY=VALUE" in bad_meta.stderr
