"""pitstop: a model-serving system with a registry, hot swaps and the Open Inference Protocol.

The public API, for third-party runtime authors and for programs that host an Engine::

    from pitstop import Runtime, RuntimeContext, RuntimeMetadata, TensorSpec, InvalidInput

A runtime is a factory ``RuntimeContext -> Runtime`` registered under the ``pitstop.runtimes``
entry-point group (see docs/model-packages.md). Everything else in the package is internal and
may change. Names are imported when first used, so ``import pitstop`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("pitstop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from pitstop.engine import Engine
    from pitstop.errors import (
        InternalError,
        InvalidInput,
        LoadError,
        PitstopError,
        Unsupported,
    )
    from pitstop.protocol.tensor import InferRequest, InferResponse, TensorSpec
    from pitstop.runtimes.base import Runtime, RuntimeContext, RuntimeMetadata
    from pitstop.settings import Settings

_PUBLIC = {
    "Engine": "pitstop.engine",
    "Settings": "pitstop.settings",
    "Runtime": "pitstop.runtimes.base",
    "RuntimeContext": "pitstop.runtimes.base",
    "RuntimeMetadata": "pitstop.runtimes.base",
    "TensorSpec": "pitstop.protocol.tensor",
    "InferRequest": "pitstop.protocol.tensor",
    "InferResponse": "pitstop.protocol.tensor",
    "PitstopError": "pitstop.errors",
    "InvalidInput": "pitstop.errors",
    "InternalError": "pitstop.errors",
    "LoadError": "pitstop.errors",
    "Unsupported": "pitstop.errors",
}

__all__ = [
    "Engine",
    "InferRequest",
    "InferResponse",
    "InternalError",
    "InvalidInput",
    "LoadError",
    "PitstopError",
    "Runtime",
    "RuntimeContext",
    "RuntimeMetadata",
    "Settings",
    "TensorSpec",
    "Unsupported",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pitstop' has no attribute {name!r}")
    return getattr(import_module(module), name)
