"""Casting between declared tensors and framework arrays."""

from __future__ import annotations

import numpy as np
import pytest

from pitstop.errors import InternalError, InvalidInput
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.signature import cast_input, conform_outputs


@pytest.mark.parametrize(
    ("array", "dtype", "expected"),
    [
        (np.array([1, 2], dtype=np.int64), np.dtype(np.float32), np.array([1.0, 2.0], np.float32)),
        # text for frameworks: object arrays of str (a fixed-width str array loses NULs)
        (
            np.array([b"a", b"\xc3\xa9"], dtype=object),
            np.dtype(str),
            np.array(["a", "é"], dtype=object),
        ),
        (np.array([b"a", b"b"], dtype="S1"), np.dtype(str), np.array(["a", "b"], dtype=object)),
        (
            np.array([b"a\x00b", b"c\x00"], dtype=object),
            np.dtype(str),
            np.array(["a\x00b", "c\x00"], dtype=object),
        ),
    ],
)
def test_cast_input(array: np.ndarray, dtype: np.dtype, expected: np.ndarray) -> None:
    result = cast_input(array, "x", dtype)
    assert result.dtype == expected.dtype
    assert result.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("array", "dtype"),
    [
        (np.array([b"1"], dtype=object), np.dtype(np.float32)),
        (np.array([1.0]), np.dtype(str)),
        (np.array([b"\xff"], dtype=object), np.dtype(str)),
        (np.array([3], dtype=object), np.dtype(str)),
    ],
)
def test_cast_input_refuses_naming_the_input(array: np.ndarray, dtype: np.dtype) -> None:
    with pytest.raises(InvalidInput, match="'x'"):
        cast_input(array, "x", dtype)


def test_conform_outputs_casts_and_drops_undeclared() -> None:
    specs = [TensorSpec("label", "BYTES", (-1,)), TensorSpec("p", "FP32", (-1, 2))]
    produced = {"label": np.array(["a", "b"]), "p": np.ones((2, 2)), "extra": np.zeros(2)}
    result = conform_outputs(produced, specs)
    assert list(result) == ["label", "p"]
    assert result["label"].tolist() == [b"a", b"b"]
    assert result["p"].dtype == np.float32


@pytest.mark.parametrize(
    "produced",
    [{}, {"p": np.ones(2)}, {"p": np.ones((2, 3))}, {"p": np.array([["a", "b"]])}],
)
def test_conform_outputs_refuses_naming_the_output(produced: dict[str, np.ndarray]) -> None:
    with pytest.raises(InternalError, match="'p'"):
        conform_outputs(produced, [TensorSpec("p", "FP32", (-1, 2))])
