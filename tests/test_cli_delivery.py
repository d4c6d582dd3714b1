"""Delivery commands and history --at through the real CLI entry point (in-process)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pitstop.cli import main
from pitstop.registry import Registry
from tests import model_factory as mf


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PITSTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PITSTOP_ACTOR", "dana")
    with Registry.open(
        f"sqlite:///{tmp_path / 'home' / 'registry.db'}", tmp_path / "home" / "artifacts"
    ) as registry:
        for factor in (2, 3, 4):
            source = (
                f"import numpy as np\nclass Model:\n    def predict(self, i):\n"
                f"        return {{'y': i['x'] * {factor}}}\n"
            )
            folder = mf.make_python_package(tmp_path / f"p{factor}", source=source)
            registry.push(folder, name="fraud", actor="dana", trust_code=True)
        registry.set_alias("fraud", "production", 1, actor="dana")
    return tmp_path / "home"


def run(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    exit_code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        exit_code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert exit_code == code, captured
    return captured.out + captured.err


def test_deploy_steer_and_rollback(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(
        capsys,
        "deploy",
        "fraud",
        "--version",
        "2",
        "--steps",
        "10,50",
        "--interval",
        "2m",
        "--max-error-rate",
        "0.05",
        "--reason",
        "retrained",
    )
    assert "fraud v2 gets 10%" in out
    status = json.loads(run(capsys, "rollout", "status", "fraud", "--json"))
    assert (status["state"], status["weight"], status["interval_s"]) == ("RUNNING", 10.0, 120.0)
    assert status["guard"]["max_error_rate"] == 0.05
    assert status["steps"] == [10.0, 50.0, 100.0]
    assert "PAUSED" in run(capsys, "rollout", "pause", "fraud")
    assert "RUNNING" in run(capsys, "rollout", "resume", "fraud")
    run(capsys, "deploy", "fraud", "--version", "3", code=1)  # one rollout at a time
    assert "ABORTED" in run(capsys, "rollout", "abort", "fraud", "--reason", "changed my mind")
    traffic = json.loads(run(capsys, "traffic", "fraud", "--json"))
    assert traffic["policy"]["arms"] == [{"target": "production", "weight": 100.0}]
    run(capsys, "rollback", "fraud", code=1)  # production never moved: nothing to go back to
    run(capsys, "alias", "set", "fraud", "production", "3")
    assert "production → v1" in run(capsys, "rollback", "fraud", "--reason", "p99")


def test_ab_shadow_fallback(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "ab", "set", "fraud", "production=80", "2=20", "--sticky", "X-User-Id")
    assert "production 80% + 2 20%; sticky on x-user-id" in out
    run(capsys, "ab", "set", "fraud", "production=80", code=1)  # does not add up to 100
    assert "shadow 3 at 0.5" in run(capsys, "shadow", "set", "fraud", "3", "--rate", "0.5")
    assert "fallback 1" in run(capsys, "fallback", "fraud", "1")
    policy = json.loads(run(capsys, "traffic", "fraud", "--json"))["policy"]
    assert policy == {
        "arms": [{"target": "production", "weight": 80.0}, {"target": "2", "weight": 20.0}],
        "shadows": [{"target": "3", "rate": 0.5}],
        "sticky_header": "x-user-id",
        "fallback": "1",
    }
    run(capsys, "shadow", "clear", "fraud")
    run(capsys, "ab", "clear", "fraud")
    run(capsys, "fallback", "fraud", "--clear")
    policy = json.loads(run(capsys, "traffic", "fraud", "--json"))["policy"]
    assert policy["arms"] == [{"target": "production", "weight": 100.0}]
    assert policy["shadows"] == []
    assert policy["fallback"] is None


def test_history_at_answers_what_served(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC)
    run(capsys, "deploy", "fraud", "--version", "2", "--steps", "25", "--interval", "1h")
    during = datetime.now(UTC)
    run(capsys, "rollout", "abort", "fraud")
    run(capsys, "alias", "set", "fraud", "production", "3", "--reason", "hotfix")
    after = datetime.now(UTC) + timedelta(seconds=1)

    def served(at: datetime) -> dict[str, float]:
        answer = json.loads(run(capsys, "history", "fraud", "--at", at.isoformat(), "--json"))
        return answer["shares"]

    assert served(before) == {"1": 100.0}
    assert served(during) == {"1": 75.0, "2": 25.0}
    assert served(after) == {"3": 100.0}
    text = run(capsys, "history", "fraud", "--at", after.isoformat())
    assert "v3 100%" in text
    assert "hotfix" in text
    rows = json.loads(run(capsys, "history", "fraud", "--since", "1h", "--json"))
    by_action = {row["action"]: row for row in rows}
    assert by_action["rollout.start"]["serving"] == "v1 75% · v2 25%"
    assert by_action["rollout.abort"]["serving"] == "v1 100%"
    assert rows[0]["action"] == "alias.set"
    assert rows[0]["serving"] == "v3 100%"

    run(capsys, "history", "--at", "2026-11-21 14:00", code=2)  # --at needs a model
