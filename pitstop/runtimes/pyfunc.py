"""MLflow pyfunc models (a custom ``PythonModel``, or a flavor pitstop has no runtime of its own
for), loaded and called through MLflow itself: ``mlflow.pyfunc.load_model(path).predict(frame)``.

Loading unpickles the model (cloudpickle carries its class's code) and imports its
``loader_module`` and ``code`` paths: it runs code, so, like the ``python`` runtime, this loads
only versions pushed with ``--trust-code`` (``context.trust_code``); otherwise
:class:`PermissionDenied`. MLflow and pandas must be installed in the server's environment
(``pip install 'pitstop[mlflow]'``); the model's recorded pip requirements
(``parameters.requirements``, from its ``requirements.txt``) are checked against what is
installed and every mismatch is logged at load, never installed.

The signature must be known (inputs and outputs declared): MLflow records it when the model is
logged with one or with an input example. A column-based input (``context.columns``) is handed
to ``predict`` as a pandas DataFrame with those columns; tensor inputs as one array (one input)
or a dict of arrays. What ``predict`` returns (array, Series, DataFrame, list, dict) becomes the
declared outputs: one output takes the whole result, several take a dict's or DataFrame's
entries by name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as distributions
from typing import Any, Final

import numpy as np

from pitstop.errors import (
    InternalError,
    InvalidInput,
    LoadError,
    PermissionDenied,
    PitstopError,
    Unavailable,
)
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata
from pitstop.runtimes.signature import check_supported, conform_outputs, framework_call

PLATFORM: Final = "mlflow_pyfunc"

log = logging.getLogger(__name__)

_REFUSALS: Final = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST"})
"""MLflow error codes that mean "this input is wrong", not "the model failed"."""
_PINNED: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)")


@dataclass(frozen=True)
class _Loaded:
    model: Any
    metadata: RuntimeMetadata


class PyfuncRuntime:
    """An MLflow pyfunc model; see the module docstring for what it accepts."""

    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        context = self._context
        if not context.trust_code:
            raise PermissionDenied(
                f"the MLflow pyfunc model in {context.path.name} runs its own code when loaded "
                "(cloudpickle); push it with --trust-code to allow loading it"
            )
        if not context.inputs or not context.outputs:
            raise LoadError(
                "MLflow pyfunc models need a signature (inputs and outputs); log the model "
                "with a signature or an input example"
            )
        check_supported([*context.inputs, *context.outputs])
        for problem in unmet_requirements(context.parameters.get("requirements") or ()):
            log.warning("%s: %s (pitstop installs nothing)", context.path.name, problem)
        try:
            import mlflow.pyfunc
        except ImportError as exc:
            raise LoadError(
                "the pyfunc runtime needs MLflow in the server's environment: "
                "pip install 'pitstop[mlflow]'"
            ) from exc
        try:
            model = mlflow.pyfunc.load_model(str(context.path))
        except PitstopError:
            raise
        except Exception as exc:
            raise LoadError(f"MLflow cannot load the pyfunc model: {exc}") from exc
        self._loaded = _Loaded(model, RuntimeMetadata(PLATFORM, context.inputs, context.outputs))

    def metadata(self) -> RuntimeMetadata:
        return self._require_loaded().metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._require_loaded()
        model_input = self._model_input(inputs)
        with framework_call("the pyfunc model's predict() failed", str):
            try:
                produced = loaded.model.predict(model_input)
            except Exception as exc:
                # MLflow's schema enforcement refuses a bad input with an MlflowException.
                if getattr(exc, "error_code", None) in _REFUSALS:
                    raise InvalidInput(f"the model refused the input: {exc}") from exc
                raise
        return conform_outputs(_outputs(produced, loaded.metadata.outputs), loaded.metadata.outputs)

    def unload(self) -> None:
        self._loaded = None

    def _model_input(self, inputs: Mapping[str, np.ndarray]) -> Any:
        context = self._context
        if context.columns:
            import pandas as pd

            (array,) = inputs.values()
            columns = {name: _plain(array[:, index]) for index, name in enumerate(context.columns)}
            return pd.DataFrame(columns)
        if len(inputs) == 1:
            return _plain(next(iter(inputs.values())))
        return {name: _plain(array) for name, array in inputs.items()}

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the pyfunc model is not loaded")
        return loaded


def _plain(array: np.ndarray) -> np.ndarray:
    """BYTES tensors (object arrays of bytes) as the strings MLflow schemas call ``string``."""
    if array.dtype == object:
        return np.array(
            [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.flat],
            dtype=object,
        ).reshape(array.shape)
    return array


def _outputs(produced: Any, specs: Sequence[Any]) -> dict[str, Any]:
    """The declared outputs out of whatever ``predict`` returned."""
    if len(specs) == 1:
        value = produced
        if hasattr(value, "to_numpy"):  # a pandas Series or DataFrame
            value = value.to_numpy()
            if value.ndim == 2 and value.shape[1] == 1 and len(specs[0].shape) == 1:
                value = value[:, 0]
        elif isinstance(value, Mapping) and len(value) == 1:
            value = next(iter(value.values()))
        return {specs[0].name: np.asarray(value)}
    if hasattr(produced, "to_dict") and hasattr(produced, "columns"):
        return {str(name): produced[name].to_numpy() for name in produced.columns}
    if isinstance(produced, Mapping):
        return {str(name): np.asarray(value) for name, value in produced.items()}
    raise InternalError(
        f"the pyfunc model returned {type(produced).__name__}; with several declared outputs "
        "it must return a dict or a DataFrame with those names"
    )


def unmet_requirements(requirements: Sequence[object]) -> list[str]:
    """Each pinned requirement (``name==version``) whose installed version differs or which is
    not installed, as a sentence. Unpinned and unparsable lines are not judged."""
    problems: list[str] = []
    for line in requirements:
        match = _PINNED.fullmatch(str(line).strip())
        if match is None:
            continue
        name, wanted = match[1], match[2]
        try:
            installed = distributions.version(name)
        except distributions.PackageNotFoundError:
            problems.append(f"requirement {name}=={wanted} is not installed")
            continue
        if installed != wanted:
            problems.append(f"requirement {name}=={wanted}: {installed} is installed")
    return problems
