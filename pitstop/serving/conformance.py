"""Whether a request conforms to a version's declared inputs and outputs, checked before any runtime
sees it (the runtime's own casting is :mod:`pitstop.runtimes.signature`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pitstop.errors import InternalError, InvalidInput
from pitstop.protocol.datatype import datatype_of
from pitstop.protocol.tensor import InferRequest, RequestedOutput, TensorSpec


def check_inputs(request: InferRequest, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """The request's inputs in declared order, or :class:`InvalidInput` naming the first problem.

    Every declared input must be present with the declared datatype, the declared rank and the
    declared fixed dimensions, and hold at least one value; inputs the model does not declare
    are refused.
    """
    declared = {spec.name for spec in specs}
    for name in request.inputs:
        if name not in declared:
            raise InvalidInput(
                f"input {name!r} is not an input of this model; expected {sorted(declared)}"
            )
    checked: dict[str, np.ndarray] = {}
    for spec in specs:
        array = request.inputs.get(spec.name)
        if array is None:
            raise InvalidInput(f"input {spec.name!r} is missing")
        sent = request.input_datatypes.get(spec.name) or datatype_of(array)
        if sent != spec.datatype:
            raise InvalidInput(
                f"input {spec.name!r}: datatype {sent} does not match the model's {spec.datatype}"
            )
        if not spec.accepts_shape(array.shape):
            raise InvalidInput(
                f"input {spec.name!r}: shape {list(array.shape)} does not match the model's "
                f"{list(spec.shape)} (-1 = any size)"
            )
        if array.size == 0:
            # Frameworks answer an empty batch inconsistently (errors, wrongly shaped outputs).
            raise InvalidInput(
                f"input {spec.name!r}: shape {list(array.shape)} holds no values; send at least "
                "one row"
            )
        checked[spec.name] = array
    return checked


def check_requested(requested: Sequence[RequestedOutput], specs: Sequence[TensorSpec]) -> None:
    """Refuse requested outputs the model does not produce."""
    names = {spec.name for spec in specs}
    for output in requested:
        if output.name not in names:
            raise InvalidInput(
                f"requested output {output.name!r} is not an output of this model; "
                f"expected {sorted(names)}"
            )


def select_outputs(
    produced: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput],
    specs: Sequence[TensorSpec],
) -> dict[str, np.ndarray]:
    """The outputs to return: the requested ones, else every declared one, in declared order."""
    wanted = [output.name for output in requested] or [spec.name for spec in specs]
    selected: dict[str, np.ndarray] = {}
    for name in wanted:
        array = produced.get(name)
        if array is None:
            raise InternalError(f"the model did not produce its declared output {name!r}")
        selected[name] = np.asarray(array)
    return selected
