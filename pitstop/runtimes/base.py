"""The Runtime contract and the table that finds a runtime by name.

A runtime adapts one ML framework to pitstop. Its contract:

- Construction (``factory(context)``) is cheap and does no I/O; the framework is imported lazily,
  inside :meth:`Runtime.load`.
- ``load()`` and ``unload()`` never overlap on one instance; pitstop calls them from a worker
  thread.
- ``predict()`` may be called concurrently from several threads after ``load()`` returned and before
  ``unload()`` is called; it must not block an event loop (pitstop never calls it from one).
- ``predict()`` receives arrays already checked against ``metadata()`` (names, datatypes, ranks,
  fixed dimensions). It returns every output it can produce, keyed by output name; pitstop
  filters the ones the client asked for. Bad values it finds itself raise
  :class:`pitstop.errors.InvalidInput` naming the input; anything else it raises is treated as an
  internal error.
- Deserialising pickle (joblib, pickle) is allowed only when ``context.trust_pickle`` is true,
  and importing user code only when ``context.trust_code`` is true; otherwise raise
  ``PermissionDenied``.

Built-in runtimes are named in :data:`BUILTIN_RUNTIMES`; third-party runtimes register a factory
under the ``pitstop.runtimes`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np

from pitstop.errors import InvalidInput, LoadError
from pitstop.protocol.tensor import TensorSpec

BUILTIN_RUNTIMES: Final[dict[str, str]] = {
    "onnx": "pitstop.runtimes.onnx:OnnxRuntime",
    "sklearn": "pitstop.runtimes.sklearn:SklearnRuntime",
    "xgboost": "pitstop.runtimes.xgboost:XGBoostRuntime",
    "lightgbm": "pitstop.runtimes.lightgbm:LightGBMRuntime",
    "python": "pitstop.runtimes.python:PythonRuntime",
    "pyfunc": "pitstop.runtimes.pyfunc:PyfuncRuntime",
    "embeddings": "pitstop.runtimes.embeddings:EmbeddingsRuntime",
}
"""Runtime name → ``module:factory`` import string."""

ENTRY_POINT_GROUP: Final = "pitstop.runtimes"


@dataclass(frozen=True)
class RuntimeContext:
    """What a runtime is given: a verified artifact folder and the version's manifest fields."""

    path: Path
    """Folder holding the version's files; already verified against its digest."""
    artifact: str | None
    """File (relative to ``path``) holding the model, when the manifest names one."""
    inputs: tuple[TensorSpec, ...] = ()
    """Declared inputs (may be empty: the runtime then reads them from the model)."""
    outputs: tuple[TensorSpec, ...] = ()
    """Declared outputs (may be empty: the runtime then reads them from the model)."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Runtime-specific parameters from the manifest."""
    columns: tuple[str, ...] = ()
    """The manifest's column names for the one 2-D input (empty: by position)."""
    trust_pickle: bool = False
    trust_code: bool = False
    threads: int = 1
    """Threads a framework may use for one call (intra-op)."""


@dataclass(frozen=True)
class RuntimeMetadata:
    """The model's interface as the loaded runtime sees it."""

    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    decoupled: bool = False
    """The model answers a request with any number of responses (Triton's decoupled
    transaction policy): served through :class:`Responder` ``responses()``, never ``predict()``,
    and only over streams (gRPC ``ModelStreamInfer``, HTTP ``generate_stream``)."""
    summed_outputs: tuple[str, ...] = ()
    """Per-row outputs (counts, flags) whose totals pitstop reports in a response's
    ``parameters`` under the output's name, e.g. the embeddings runtime's ``tokens`` and
    ``truncated``. Totals cover the rows of that response only, so they survive batching."""
    centroids: Mapping[str, tuple[float, ...]] = field(default_factory=dict, compare=False)
    """Output name → the centroid of that output's rows on the version's reference set (an
    embedding model's evaluation sentences), for behaviour monitoring. Empty when none."""

    def totals(self, outputs: Mapping[str, np.ndarray]) -> dict[str, int]:
        """The sum of each of :attr:`summed_outputs` present in ``outputs``."""
        return {
            name: int(np.sum(outputs[name], dtype=np.int64))
            for name in self.summed_outputs
            if name in outputs
        }


class Runtime(Protocol):
    """One loaded model version. See the module docstring for the full contract."""

    def load(self) -> None:
        """Deserialise the model from ``context.path``. May take long; runs in a worker thread."""

    def metadata(self) -> RuntimeMetadata:
        """Inputs and outputs; valid after ``load()``."""

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a batch. Thread-safe; never called before ``load()``."""

    def unload(self) -> None:
        """Release the model. No ``predict()`` is in flight when this is called."""


@runtime_checkable
class SessionFeeds(Protocol):
    """A runtime over one ONNX graph that can say what it feeds that graph.

    ``session_feeds(inputs)`` returns, for a batch ``predict`` would accept, the feed dicts
    (graph input name → array) its ``predict`` would pass to ``InferenceSession.run``, in order;
    same preconditions as ``predict``. Quantisation uses them to look at the graph's activations.
    """

    def session_feeds(self, inputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]: ...


@runtime_checkable
class Responder(Protocol):
    """A runtime whose model answers one request with any number of responses
    (``metadata().decoupled`` is true).

    ``responses(inputs)`` takes what ``predict`` would and returns an iterator of output dicts,
    one per response, each with every declared output (checked as ``predict``'s are). pitstop
    advances it from worker threads, one ``next()`` at a time and never two at once, and
    closes it (``close()``) when the caller goes away or its deadline passes, so a generator's
    ``finally`` runs. Exceptions follow ``predict``'s rules."""

    def responses(self, inputs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]: ...


RuntimeFactory = Callable[[RuntimeContext], Runtime]


def runtime_names() -> list[str]:
    """Every runtime name this installation knows: built-ins plus entry points."""
    return sorted({*BUILTIN_RUNTIMES, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def resolve_runtime(name: str) -> RuntimeFactory:
    """The factory registered under ``name``; :class:`LoadError` when there is none."""
    target = BUILTIN_RUNTIMES.get(name)
    if target is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                factory: RuntimeFactory = ep.load()
                return factory
        raise LoadError(f"unknown runtime {name!r}; known runtimes: {', '.join(runtime_names())}")
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory


def require_input(inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The input called ``name``, or :class:`InvalidInput` naming it."""
    try:
        return inputs[name]
    except KeyError:
        raise InvalidInput(f"input {name!r} is missing") from None
