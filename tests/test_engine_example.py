"""The Engine example in docs/architecture.md runs as written: an Engine with no server, one
request through its DataPlane, stopped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests import model_factory as mf
from tests.server import open_registry

ROOT = Path(__file__).resolve().parent.parent


def example() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    after = text.split("runs exactly this block", 1)[1]
    found = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert found is not None, "the example block is gone from docs/architecture.md"
    return found.group(1)


def test_the_documented_engine_example_serves_a_request_without_a_server(tmp_path: Path) -> None:
    code = example()
    assert len(code.splitlines()) <= 30
    home = tmp_path / "home"
    with open_registry(home) as registry:
        registry.push(mf.make_onnx_package(tmp_path / "iris"), name="iris",
                      aliases=["production"], actor="test")  # fmt: skip
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "PITSTOP_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("iris v1: {"), done.stdout
    assert "'label'" in done.stdout, done.stdout


def test_the_public_api_is_importable_from_the_package_and_lazy() -> None:
    code = (
        "import sys, pitstop\n"
        "assert 'pitstop.runtimes.base' not in sys.modules\n"
        "from pitstop import Engine, Runtime, RuntimeContext, RuntimeMetadata, TensorSpec\n"
        "from pitstop import InvalidInput, LoadError, PitstopError, Settings\n"
        "assert issubclass(InvalidInput, PitstopError)\n"
        "assert set(pitstop.__all__) >= {'Runtime', 'Engine', 'TensorSpec'}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
