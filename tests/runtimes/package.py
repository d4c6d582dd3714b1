"""Read a test package's ``pitstop.yaml`` into a RuntimeContext (independent of the registry)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import Runtime, RuntimeContext, resolve_runtime
from tests.model_factory import MANIFEST


def specs(entries: list[dict[str, Any]] | None) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(e["name"], e["datatype"], tuple(e["shape"])) for e in entries or ())


def read_package(folder: Path, **overrides: Any) -> tuple[str, RuntimeContext]:
    """(runtime name, context) for ``folder``; ``overrides`` replace context fields."""
    manifest = yaml.safe_load((folder / MANIFEST).read_text())
    context = RuntimeContext(
        path=folder,
        artifact=manifest.get("artifact"),
        inputs=specs(manifest.get("inputs")),
        outputs=specs(manifest.get("outputs")),
        parameters=manifest.get("parameters") or {},
    )
    return manifest["runtime"], replace(context, **overrides)


def runtime_for(folder: Path, **overrides: Any) -> Runtime:
    """An unloaded runtime for the package in ``folder``, built through ``resolve_runtime``."""
    name, context = read_package(folder, **overrides)
    return resolve_runtime(name)(context)


def loaded(folder: Path, **overrides: Any) -> Runtime:
    """A loaded runtime for the package in ``folder``."""
    runtime = runtime_for(folder, **overrides)
    runtime.load()
    return runtime
