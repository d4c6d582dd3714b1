"""scikit-learn estimators and pipelines.

``parameters.format`` says how the model was saved:

- ``skops`` (default; file ``model.skops``): loaded with ``skops.io.load``. Types from scikit-learn,
  NumPy and SciPy are trusted; any other type in the file (a custom transformer, say) could run
  code while loading, so it is refused with :class:`PermissionDenied` unless the version was pushed
  with ``--trust-pickle`` (``context.trust_pickle``).
- ``joblib`` (file ``model.joblib``) and ``pickle`` (file ``model.pkl``): arbitrary code runs while
  loading, so only with ``context.trust_pickle``.

The model takes one input: numeric inputs become a float64 ``[batch, n_features]`` matrix, BYTES
inputs (text pipelines) an array of ``str``. Without declared inputs the input is ``input`` FP32
``[-1, n_features_in_]``.

Outputs, when the manifest declares none: a classifier gives ``label`` (``predict``; INT64 for
integer classes, BYTES for string classes) and, if it has ``predict_proba``, ``probabilities`` (FP32
``[-1, n_classes]``); anything else gives ``prediction`` (``predict``, shaped and typed as a
one-row probe returns it). Declared outputs are computed by the method their name maps to —
``label``/``prediction`` → ``predict``, ``probabilities`` → ``predict_proba``, ``decision`` →
``decision_function`` — or as ``parameters.methods`` (``{output_name: method_name}``) says.
scikit-learn's own threading is left as configured; ``context.threads`` is not applied.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from pitstop.errors import (
    LoadError,
    PermissionDenied,
    Unavailable,
)
from pitstop.protocol.datatype import datatype_of
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata, require_input
from pitstop.runtimes.signature import (
    cast_input,
    check_supported,
    conform_outputs,
    derived_output,
    feature_matrix,
    framework_call,
    tabular_input,
)

PLATFORM: Final = "sklearn"

DEFAULT_ARTIFACTS: Final[dict[str, str]] = {
    "skops": "model.skops",
    "joblib": "model.joblib",
    "pickle": "model.pkl",
}
"""``parameters.format`` → the file loaded when the manifest names no artifact."""

DEFAULT_METHODS: Final[dict[str, str]] = {
    "label": "predict",
    "prediction": "predict",
    "probabilities": "predict_proba",
    "decision": "decision_function",
}
"""Declared output name → estimator method; ``parameters.methods`` adds to and overrides it."""

_TRUSTED_PACKAGES: Final = frozenset({"sklearn", "numpy", "scipy", "lightgbm", "xgboost"})
"""Packages whose types a skops file may construct without --trust-pickle: estimator and
array libraries (LightGBM and XGBoost for their scikit-learn-API models, as MLflow saves
them)."""
_TRUSTED_TYPES: Final = frozenset({"collections.OrderedDict", "collections.defaultdict"})


@dataclass(frozen=True)
class _Loaded:
    input: TensorSpec
    n_features: int | None
    methods: tuple[tuple[str, Callable[[Any], Any]], ...]
    """(output name, bound estimator method), in output order."""
    metadata: RuntimeMetadata


class SklearnRuntime:
    """A scikit-learn estimator; its predict methods are called concurrently, without a lock."""

    def __init__(self, context: RuntimeContext) -> None:
        self._context = context
        self._loaded: _Loaded | None = None

    def load(self) -> None:
        context = self._context
        fmt = context.parameters.get("format", "skops")
        if fmt not in DEFAULT_ARTIFACTS:
            raise LoadError(
                f"parameters.format {fmt!r} is not one of {sorted(DEFAULT_ARTIFACTS)} (sklearn)"
            )
        path = context.path / (context.artifact or DEFAULT_ARTIFACTS[fmt])
        if fmt != "skops" and not context.trust_pickle:
            raise PermissionDenied(
                f"the sklearn model {path.name} is pickle-based ({fmt}); "
                "push it with --trust-pickle to allow loading it"
            )
        if not path.is_file():
            raise LoadError(f"sklearn model file {path} does not exist")
        model = _load_skops(path, context.trust_pickle) if fmt == "skops" else _unpickle(path, fmt)

        n_features = getattr(model, "n_features_in_", None)
        n_features = int(n_features) if n_features is not None else None
        spec = tabular_input(context, n_features, "sklearn")
        outputs = context.outputs or _derived_outputs(model, n_features)
        check_supported(outputs)
        methods = _methods(model, outputs, context.parameters.get("methods", {}))
        self._loaded = _Loaded(
            input=spec,
            n_features=n_features,
            methods=methods,
            metadata=RuntimeMetadata(PLATFORM, (spec,), tuple(outputs)),
        )

    def metadata(self) -> RuntimeMetadata:
        return self._require_loaded().metadata

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._require_loaded()
        name = loaded.input.name
        if loaded.input.datatype == "BYTES":
            features = cast_input(require_input(inputs, name), name, np.dtype(str))
        else:
            features = feature_matrix(inputs, loaded.input, loaded.n_features, np.dtype(np.float64))
        produced: dict[str, object] = {}
        for output, method in loaded.methods:
            # scikit-learn validates X and raises ValueError for NaN, unknown categories, ...
            with framework_call(
                f"sklearn failed computing {output!r}", lambda exc: f"input {name!r}: {exc}"
            ):
                produced[output] = method(features)
        return conform_outputs(produced, loaded.metadata.outputs)

    def unload(self) -> None:
        self._loaded = None

    def _require_loaded(self) -> _Loaded:
        loaded = self._loaded
        if loaded is None:
            raise Unavailable("the sklearn model is not loaded")
        return loaded


def _load_skops(path: Path, trust_pickle: bool) -> Any:
    import skops.io

    try:
        untrusted: list[str] = skops.io.get_untrusted_types(file=path)
    except Exception as exc:
        raise LoadError(f"{path.name} is not a readable skops file: {exc}") from exc
    foreign = [
        name
        for name in untrusted
        if name.split(".")[0] not in _TRUSTED_PACKAGES and name not in _TRUSTED_TYPES
    ]
    if foreign and not trust_pickle:
        raise PermissionDenied(
            f"the sklearn model {path.name} contains types from outside scikit-learn, NumPy, "
            f"SciPy, LightGBM and XGBoost ({', '.join(foreign)}), which may run code while "
            "loading; "
            "push it with --trust-pickle to allow loading it"
        )
    try:
        return skops.io.load(path, trusted=untrusted)
    except Exception as exc:
        raise LoadError(f"skops cannot load {path.name}: {exc}") from exc


def _unpickle(path: Path, fmt: str) -> Any:
    try:
        if fmt == "joblib":
            import joblib  # type: ignore[import-untyped]

            return joblib.load(path)
        with path.open("rb") as file:
            return pickle.load(file)  # trusted: the caller checked context.trust_pickle
    except Exception as exc:
        raise LoadError(f"cannot unpickle {path.name}: {exc}") from exc


def _derived_outputs(model: Any, n_features: int | None) -> tuple[TensorSpec, ...]:
    from sklearn.base import is_classifier

    if is_classifier(model):
        classes = getattr(model, "classes_", None)
        if not isinstance(classes, np.ndarray) or classes.ndim != 1:
            raise LoadError(
                "the sklearn classifier has no single list of classes_ (multi-output?); "
                "declare its outputs in the manifest"
            )
        label = "INT64" if classes.dtype.kind in "iu" else datatype_of(classes)
        outputs = [TensorSpec("label", label, (-1,))]
        if hasattr(model, "predict_proba"):
            outputs.append(TensorSpec("probabilities", "FP32", (-1, len(classes))))
        return tuple(outputs)
    if n_features is None:
        raise LoadError(
            "the sklearn model does not record n_features_in_; declare its outputs in the manifest"
        )
    try:
        probe = np.asarray(model.predict(np.zeros((1, n_features))))
    except Exception as exc:
        raise LoadError(
            f"cannot infer the sklearn model's output from a probe ({exc}); "
            "declare its outputs in the manifest"
        ) from exc
    return (derived_output("prediction", probe),)


def _methods(
    model: Any, outputs: tuple[TensorSpec, ...], overrides: object
) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    if not isinstance(overrides, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in overrides.items()
    ):
        raise LoadError("parameters.methods must map output names to method names")
    table = {**DEFAULT_METHODS, **overrides}
    methods = []
    for spec in outputs:
        method_name = table.get(spec.name)
        if method_name is None:
            raise LoadError(
                f"output {spec.name!r}: no sklearn method computes it; name it "
                f"{sorted(DEFAULT_METHODS)} or map it in parameters.methods"
            )
        method = getattr(model, method_name, None)
        if not callable(method):
            raise LoadError(f"output {spec.name!r}: the model has no method {method_name!r}")
        methods.append((spec.name, method))
    return tuple(methods)
