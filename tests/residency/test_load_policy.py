"""``pitstop load-policy``: the load policy is a registry setting, audited, kept by the other
policy commands."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import run_cli
from tests.residency.models import make_weighted_onnx
from tests.server import open_registry


def test_load_policy_is_set_audited_and_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with open_registry(home) as registry:
        registry.push(make_weighted_onnx(tmp_path / "m", 0.1, 1), name="m", aliases=["production"],
                      actor="t")  # fmt: skip
    env = {"PITSTOP_HOME": str(home)}
    done = run_cli(env, "load-policy", "m", "on-demand", "--reason", "rarely used")
    assert done.returncode == 0, done.stderr
    assert "loads on-demand" in done.stdout
    run_cli(env, "shadow", "set", "m", "production", "--rate", "0.5")
    run_cli(env, "fallback", "m", "production")
    shown = json.loads(run_cli(env, "traffic", "m", "--json").stdout)["policy"]
    assert shown["load"] == "on-demand"  # other policy commands keep it
    assert shown["shadows"] == [{"target": "production", "rate": 0.5}]
    history = json.loads(run_cli(env, "history", "m", "--json").stdout)
    assert any(e["reason"] == "rarely used" for e in history)
    assert run_cli(env, "load-policy", "m", "default").returncode == 0
    assert "load" not in json.loads(run_cli(env, "traffic", "m", "--json").stdout)["policy"]
    refused = run_cli(env, "load-policy", "m", "sometimes")
    assert refused.returncode == 2
