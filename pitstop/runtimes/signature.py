"""A model's signature as a runtime enforces it: casting inputs for a framework, outputs back.

Runtimes meet pitstop at two edges. On the way in, an input array (already checked by pitstop
against the runtime's metadata) is cast to the dtype the framework computes with; a value the
framework cannot take raises :class:`InvalidInput` naming the input. On the way out, whatever the
framework produced is conformed to the declared output specs: present, cast to the declared
datatype (BYTES becomes an object array of UTF-8 ``bytes``), rank and fixed dimensions as declared;
a mismatch there is the runtime's (or the manifest's) fault, so it raises :class:`InternalError`.

Tabular models (scikit-learn, XGBoost, LightGBM) take one 2-D feature matrix; when the manifest
declares no inputs they get a single input ``"input"`` FP32 ``[-1, n_features]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final

import numpy as np

from pitstop.errors import InternalError, InvalidInput, LoadError, PitstopError
from pitstop.protocol.datatype import NUMPY_DTYPES, datatype_of
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import RuntimeContext, require_input

TABULAR_INPUT: Final = "input"
"""Name of the one input a tabular model gets when the manifest declares none."""

_STRING_KINDS: Final = frozenset("OSU")


def cast_input(array: np.ndarray, name: str, dtype: np.dtype[np.generic]) -> np.ndarray:
    """``array`` as ``dtype`` for a framework; a string ``dtype`` (kind ``U``) decodes BYTES
    into an **object** array of ``str``: a fixed-width ``U`` array would drop trailing NULs, and
    onnxruntime reads one as C strings, cutting each element at its first NUL. Elements that
    are not UTF-8 are :class:`InvalidInput` (these frameworks take text, which their Python
    APIs encode as UTF-8: other bytes cannot reach the model).

    Strings never silently become numbers (nor numbers strings): that is :class:`InvalidInput`.
    """
    wants_text = dtype.kind in _STRING_KINDS
    has_text = array.dtype.kind in _STRING_KINDS
    if wants_text != has_text:
        expected = "BYTES" if wants_text else "numeric data"
        raise InvalidInput(f"input {name!r}: expected {expected}, got numpy dtype {array.dtype}")
    if not wants_text:
        return array.astype(dtype, copy=False)
    # Frameworks take Python str; pitstop carries BYTES as bytes (object or fixed-width).
    decoded = np.empty(array.size, dtype=object)
    for index, item in enumerate(array.ravel().tolist()):
        if isinstance(item, bytes):
            try:
                decoded[index] = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"input {name!r}: BYTES element {index} is not valid UTF-8 (this runtime "
                    "passes text to its framework, which takes UTF-8 only)"
                ) from None
        else:
            decoded[index] = _as_str(item, name)
    return decoded.reshape(array.shape)


def _as_str(item: object, name: str) -> str:
    if isinstance(item, str):
        return item
    raise InvalidInput(f"input {name!r}: expected BYTES elements, got {type(item).__name__}")


def conform_outputs(
    produced: Mapping[str, object], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """Each declared output from ``produced``, cast and shape-checked; undeclared ones are dropped.

    Raises :class:`InternalError` naming the output when one is missing, cannot be cast to its
    declared datatype, or has a rank or fixed dimension other than declared.
    """
    result: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in produced:
            raise InternalError(f"the model did not produce its declared output {spec.name!r}")
        result[spec.name] = conform_output(np.asarray(produced[spec.name]), spec)
    return result


def conform_output(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``array`` as ``spec`` declares it (see :func:`conform_outputs`)."""
    if not spec.accepts_shape(array.shape):
        raise InternalError(
            f"output {spec.name!r} has shape {list(array.shape)}, "
            f"but its declared shape is {list(spec.shape)}"
        )
    if spec.datatype == "BYTES":
        return _to_bytes(array)
    dtype = NUMPY_DTYPES.get(spec.datatype)
    if dtype is None:
        raise InternalError(f"output {spec.name!r}: datatype {spec.datatype} is not supported")
    if array.dtype.kind in _STRING_KINDS:
        raise InternalError(
            f"output {spec.name!r} holds strings, but its declared datatype is {spec.datatype}"
        )
    return array.astype(dtype, copy=False)


def _to_bytes(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.object_ and all(isinstance(item, bytes) for item in array.ravel()):
        return array
    encoded = np.empty(array.shape, dtype=np.object_)
    for index, item in np.ndenumerate(array):
        if isinstance(item, bytes | np.bytes_):
            encoded[index] = bytes(item)
        else:
            # Labels may be any scalar (int, numpy str, ...); their text is what a client reads.
            encoded[index] = str(item).encode("utf-8")
    return encoded


def check_supported(specs: Sequence[TensorSpec]) -> None:
    """:class:`LoadError` naming the first spec whose datatype has no numpy equivalent (BF16)."""
    for spec in specs:
        if spec.datatype not in NUMPY_DTYPES:
            raise LoadError(f"tensor {spec.name!r}: datatype {spec.datatype} is not supported")


def tabular_input(context: RuntimeContext, n_features: int | None, runtime: str) -> TensorSpec:
    """The one input of a tabular model: the declared one, else ``input`` FP32 ``[-1, n]``.

    :class:`LoadError` when the manifest declares several inputs (the model takes one matrix), or
    none while the model does not record its feature count.
    """
    if len(context.inputs) > 1:
        names = ", ".join(repr(spec.name) for spec in context.inputs)
        raise LoadError(f"{runtime} models take one input, but the manifest declares {names}")
    if context.inputs:
        spec = context.inputs[0]
        check_supported([spec])
        return spec
    if n_features is None:
        raise LoadError(
            f"the {runtime} model does not record its number of features; "
            "declare its input in the manifest"
        )
    return TensorSpec(TABULAR_INPUT, "FP32", (-1, n_features))


def feature_matrix(
    inputs: Mapping[str, np.ndarray],
    spec: TensorSpec,
    n_features: int | None,
    dtype: np.dtype[np.generic],
) -> np.ndarray:
    """The input ``spec`` names as a ``[batch, n_features]`` matrix of ``dtype``.

    :class:`InvalidInput` naming the input when it is missing, not numeric, not 2-D, or has another
    number of columns than the model was trained on.
    """
    matrix = cast_input(require_input(inputs, spec.name), spec.name, dtype)
    if matrix.ndim != 2 or (n_features is not None and matrix.shape[1] != n_features):
        columns = "n_features" if n_features is None else str(n_features)
        raise InvalidInput(
            f"input {spec.name!r}: expected shape [batch, {columns}], got {list(matrix.shape)}"
        )
    # Boosters copy (and LightGBM warns about) strided views; one contiguous copy here at most.
    return np.ascontiguousarray(matrix)


def derived_output(name: str, probe: np.ndarray) -> TensorSpec:
    """The spec of an output from what the model returned for a one-row probe."""
    return TensorSpec(name, datatype_of(probe), (-1, *probe.shape[1:]))


@contextmanager
def framework_call(
    failure: str,
    blame: Callable[[Exception], str],
    refusals: tuple[type[Exception], ...] = (ValueError,),
) -> Iterator[None]:
    """Translate what a framework's predict raises, the same way in every runtime: pitstop's
    own errors pass through; ``refusals`` (how the framework rejects an input it was handed:
    NaN, unknown categories, a wrong shape) become InvalidInput with ``blame(exc)``, which names
    the input; anything else is the runtime's fault, InternalError ``"<failure>: <exc>"``."""
    try:
        yield
    except PitstopError:
        raise
    except refusals as exc:
        raise InvalidInput(blame(exc)) from exc
    except Exception as exc:
        raise InternalError(f"{failure}: {exc}") from exc
