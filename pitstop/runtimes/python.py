"""User code as a model: a handler class named by ``parameters.handler = "module:Class"``.

Importing user code runs it, so this runtime loads only versions pushed with ``--trust-code``
(``context.trust_code``); otherwise :class:`PermissionDenied`.

``module`` is a file ``module.py`` or a package ``module/__init__.py`` inside the version's folder.
It is imported under a name unique to this load, so two versions of one handler never share module
state. The folder is on ``sys.path`` only while the module's top level runs: import helper modules
there (their entries are forgotten afterwards, so another version's helpers of the same name load
afresh), or make the handler a package and use relative imports.

The handler contract — a plain class; it never needs to import pitstop::

    class Model:
        def __init__(self) -> None:
            '''Called with no arguments.'''

        def load(self, path: pathlib.Path, parameters: dict) -> None:
            '''Optional. ``path`` is the version's folder; ``parameters`` the manifest's.'''

        def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            '''Required. May run concurrently from several threads. Arrays have the batch
            dimension first; BYTES tensors are object arrays of ``bytes``.'''

        def unload(self) -> None:
            '''Optional. Release resources; no predict() is in flight.'''

A ``predict`` written as a generator (``yield`` instead of ``return``) makes the model
*decoupled* (Triton's term): each dict it yields is one response, any number of them (none
too) for one request. Decoupled models are served over streams only (gRPC ``ModelStreamInfer``,
HTTP ``/generate_stream``; ``/generate`` answers with the last response), one ``next()`` at a
time from worker threads; when the client goes away or the deadline passes the generator is
closed, so its ``finally`` blocks run.

The manifest must declare inputs and outputs (:class:`LoadError` otherwise); pitstop checks
requests against them before ``predict`` sees them. ``predict`` must return every declared output
(:class:`InternalError` naming the one missing); each is cast to its declared datatype, and
undeclared ones are dropped. Exceptions from ``predict`` propagate unchanged: pitstop errors (say
:class:`InvalidInput`) as they are, anything else is wrapped by the caller.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np

from pitstop.errors import (
    InternalError,
    LoadError,
    PermissionDenied,
    PitstopError,
    Unavailable,
    Unsupported,
)
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata
from pitstop.runtimes.signature import check_supported, conform_outputs

PLATFORM: Final = "python"

# sys.path and sys.modules are process-wide; loads in parallel worker threads take turns.
_IMPORT_LOCK: Final = threading.Lock()
_LOAD_IDS: Final = itertools.count()


@dataclass(frozen=True)
class _Loaded:
    handler: Any
    predict: Callable[[dict[str, np.ndarray]], object]
    module_name: str
    decoupled: bool
    metadata: RuntimeMetadata


class PythonRuntime:
    """A user handler class; see the module docstring for its contract."""

    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        context = self._context
        if not context.trust_code:
            raise PermissionDenied(
                f"the python model in {context.path.name} runs user code; "
                "push it with --trust-code to allow loading it"
            )
        if not context.inputs or not context.outputs:
            raise LoadError("python models must declare their inputs and outputs in the manifest")
        check_supported([*context.inputs, *context.outputs])
        module_name, class_name = _parse_handler(context.parameters.get("handler"))
        unique = f"pitstop_handler_{next(_LOAD_IDS)}_{module_name}"
        module = _import(context.path, module_name, unique)
        try:
            handler = _construct(module, class_name)
            predict = getattr(handler, "predict", None)
            if not callable(predict):
                raise LoadError(f"handler {module_name}:{class_name} has no predict() method")
            user_load = getattr(handler, "load", None)
            if callable(user_load):
                try:
                    user_load(context.path, dict(context.parameters))
                except PitstopError:
                    raise
                except Exception as exc:
                    raise LoadError(f"handler {class_name}.load() failed: {exc}") from exc
        except BaseException:
            _forget(unique)
            raise
        decoupled = inspect.isgeneratorfunction(predict)
        self._loaded = _Loaded(
            handler=handler,
            predict=predict,
            module_name=unique,
            decoupled=decoupled,
            metadata=RuntimeMetadata(
                PLATFORM, context.inputs, context.outputs, decoupled=decoupled
            ),
        )

    def metadata(self) -> RuntimeMetadata:
        return self._require_loaded().metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._require_loaded()
        if loaded.decoupled:
            raise Unsupported(
                "this python model is decoupled (its predict() yields responses): it answers "
                "over streams only"
            )
        return _conform(loaded.predict(dict(inputs)), loaded.metadata)

    def responses(self, inputs: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """A decoupled handler's responses, each checked as predict()'s result is."""
        loaded = self._require_loaded()
        if not loaded.decoupled:
            yield self.predict(inputs)
            return
        produced = loaded.predict(dict(inputs))
        assert isinstance(produced, Generator)
        try:
            for each in produced:
                yield _conform(each, loaded.metadata)
        finally:
            produced.close()

    def unload(self) -> None:
        loaded = self._loaded
        if loaded is None:
            return
        self._loaded = None
        try:
            user_unload = getattr(loaded.handler, "unload", None)
            if callable(user_unload):
                user_unload()
        except Exception as exc:
            raise InternalError(f"the python handler's unload() failed: {exc}") from exc
        finally:
            _forget(loaded.module_name)

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the python model is not loaded")
        return loaded


def _conform(produced: object, metadata: RuntimeMetadata) -> dict[str, np.ndarray]:
    if not isinstance(produced, Mapping):
        raise InternalError(
            f"the python handler's predict() gave {type(produced).__name__}, "
            "not a dict of output name to array"
        )
    return conform_outputs(produced, metadata.outputs)


def _parse_handler(handler: object) -> tuple[str, str]:
    if not isinstance(handler, str):
        raise LoadError('python models need parameters.handler, e.g. "handler:Model"')
    module_name, _, class_name = handler.partition(":")
    if not module_name.isidentifier() or not class_name.isidentifier():
        raise LoadError(
            f"parameters.handler {handler!r} is not 'module:Class' "
            "(module: a .py file or package folder in the model's folder)"
        )
    return module_name, class_name


def _import(folder: Path, module_name: str, unique: str) -> ModuleType:
    package = folder / module_name / "__init__.py"
    file = folder / f"{module_name}.py"
    if package.is_file():
        spec = importlib.util.spec_from_file_location(
            unique, package, submodule_search_locations=[str(package.parent)]
        )
    elif file.is_file():
        spec = importlib.util.spec_from_file_location(unique, file)
    else:
        raise LoadError(f"handler module {module_name!r}: neither {file.name} nor {package} exists")
    if spec is None or spec.loader is None:
        raise LoadError(f"handler module {module_name!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    entry = str(folder)
    with _IMPORT_LOCK:
        before = set(sys.modules)
        # Registered before it runs, as the import system does, so relative imports resolve.
        sys.modules[unique] = module
        sys.path.insert(0, entry)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            _forget(unique)
            raise LoadError(f"importing handler module {module_name!r} failed: {exc}") from exc
        finally:
            sys.path.remove(entry)
            _forget_helpers(set(sys.modules) - before, folder, unique)
    return module


def _forget_helpers(new: set[str], folder: Path, unique: str) -> None:
    """Drop modules imported by plain name from ``folder``: they belong to this load only."""
    root = folder.resolve()
    for name in new:
        if name == unique or name.startswith(unique + "."):
            continue
        origin = getattr(sys.modules.get(name), "__file__", None)
        if origin is not None and Path(origin).resolve().is_relative_to(root):
            del sys.modules[name]


def _forget(unique: str) -> None:
    for name in [n for n in sys.modules if n == unique or n.startswith(unique + ".")]:
        del sys.modules[name]


def _construct(module: ModuleType, class_name: str) -> Any:
    cls = getattr(module, class_name, None)
    if not callable(cls):
        raise LoadError(f"handler module has no class {class_name!r}")
    try:
        return cls()
    except Exception as exc:
        raise LoadError(f"constructing handler {class_name}() failed: {exc}") from exc
