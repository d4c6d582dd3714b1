"""Python-handler models for delivery tests: one that scores four numbers, one whose answers are
shifted, one that always fails; pushed as trusted code, with no warm-up (the broken one must
still load)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

from pitstop.registry import Registry
from tests import model_factory as mf


def handler(body: str) -> str:
    return (
        "import numpy as np\n\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        x = inputs['x']\n"
        f"        {body}\n"
    )


SCORE = "return {'y': x.sum(axis=1).astype(np.float32)}"
SHIFTED = "return {'y': (x.sum(axis=1) + 5).astype(np.float32)}"
BROKEN = "raise RuntimeError('canary is broken')"


def push(registry: Registry, folder: Path, model: str, body: str, *aliases: str) -> int:
    mf.make_python_package(folder, source=handler(body))
    path = folder / "pitstop.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest["outputs"] = [{"name": "y", "datatype": "FP32", "shape": [-1]}]
    manifest.pop("warmup", None)  # the broken handler must still load
    path.write_text(yaml.safe_dump(manifest))
    result = registry.push(folder, name=model, aliases=aliases, actor="t", trust_code=True)
    return result.version.number


def body(rng: random.Random) -> dict[str, Any]:
    data = [round(rng.random(), 3) for _ in range(4)]
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": data}]}
