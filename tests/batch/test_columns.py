"""Column mapping decided from names alone, and conversion with per-row errors (tables)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pitstop.errors import InvalidInput
from pitstop.protocol.columns import Source, plan, tensors
from pitstop.protocol.tensor import TensorSpec

X4 = TensorSpec("x", "FP32", (-1, 4))
MASK = TensorSpec("mask", "INT64", (-1,))


@pytest.mark.parametrize(
    ("inputs", "names", "overrides", "kept", "expected"),
    [
        ([X4], ["id", "x"], {}, ["id"], {"x": ("x",)}),
        ([X4], ["id", "a", "b", "c", "d"], {}, ["id"], {"x": ("a", "b", "c", "d")}),
        ([X4], ["a", "b", "c", "d"], {}, [], {"x": ("a", "b", "c", "d")}),
        ([X4], ["f", "a", "b", "c", "d"], {"x": ["d", "c", "b", "a"]}, [],
         {"x": ("d", "c", "b", "a")}),
        ([X4], ["id", "features"], {"x": ["features"]}, ["id"], {"x": ("features",)}),
        ([X4, MASK], ["x", "mask", "id"], {}, [], {"x": ("x",), "mask": ("mask",)}),
        ([MASK], ["id", "m"], {}, ["id"], {"mask": ("m",)}),
    ],
)  # fmt: skip
def test_plan(
    inputs: list[TensorSpec],
    names: list[str],
    overrides: dict[str, list[str]],
    kept: list[str],
    expected: dict[str, tuple[str, ...]],
) -> None:
    assert {s.input.name: s.columns for s in plan(inputs, names, overrides, kept)} == expected


@pytest.mark.parametrize(
    ("inputs", "names", "overrides", "kept", "message"),
    [
        ([X4], ["id", "a", "b"], {}, ["id"], "input 'x' .* no column named so"),
        ([X4, MASK], ["a", "b", "c", "d"], {}, [], "input 'x'"),
        ([X4], ["x"], {"y": ["x"]}, [], "no input 'y'"),
        ([X4], ["x"], {"x": ["nope"]}, [], "no column 'nope'"),
        ([], ["x"], {}, [], "declares no inputs"),
    ],
)
def test_plan_refuses_naming_what_is_missing(
    inputs: list[TensorSpec], names: list[str], overrides: dict[str, list[str]],
    kept: list[str], message: str,
) -> None:  # fmt: skip
    with pytest.raises(InvalidInput, match=message):
        plan(inputs, names, overrides, kept)


def column(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    valid = np.array([v is not None for v in values])
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float}:
        array = np.array([0 if v is None else v for v in values], dtype=np.float64)
    else:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    return array, valid


def test_stacked_scalar_columns_with_bad_rows() -> None:
    sources = [Source(X4, ("a", "b", "c", "d"))]
    columns = {
        "a": column([1.0, 2.0, 3.0]),
        "b": column(["1", "oops", "3"]),  # text from CSV/JSONL
        "c": column([1.0, None, 3.0]),
        "d": column([1.0, 2.0, 3.0]),
    }
    arrays, ok, errors = tensors(sources, columns, 3)
    assert ok.tolist() == [True, False, True]
    assert errors == {1: "column 'b': 'oops' is not float32"}
    assert arrays["x"].tolist() == [[1, 1, 1, 1], [3, 3, 3, 3]]
    assert arrays["x"].dtype == np.float32


def test_a_tensor_column_of_lists_or_json_text() -> None:
    sources = [Source(X4, ("f",))]
    lists = column([[1, 2, 3, 4], [1, 2, 3], None, [5, 6, 7, 8]])
    arrays, ok, errors = tensors(sources, {"f": lists}, 4)
    assert ok.tolist() == [True, False, False, True]
    assert errors[1] == "column 'f': 3 values, the model wants 4"
    assert errors[2] == "column 'f' is empty"
    assert arrays["x"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    text = column(["[1, 2, 3, 4]", "[nope", "[5, 6, 7, 8]"])
    arrays, ok, errors = tensors(sources, {"f": text}, 3)
    assert ok.tolist() == [True, False, True]
    assert errors[1] == "column 'f': '[nope' is not an array"


def test_a_tensor_column_whose_first_value_is_bad_fails_only_that_row() -> None:
    sources = [Source(X4, ("f",))]
    arrays, ok, errors = tensors(sources, {"f": column(["", "[1, 2, 3, 4]", 7])}, 3)
    assert ok.tolist() == [False, True, False]
    assert errors == {0: "column 'f': '' is not an array", 2: "column 'f': '7' is not an array"}
    assert arrays["x"].tolist() == [[1, 2, 3, 4]]


def test_integers_never_wrap_around() -> None:
    small = TensorSpec("small", "INT8", (-1,))
    values = (np.array([5, 300, -129, -5], dtype=np.int64), np.ones(4, dtype=bool))
    arrays, ok, errors = tensors([Source(small, ("v",))], {"v": values}, 4)
    assert ok.tolist() == [True, False, False, True]
    assert errors[1] == "column 'v': 300 does not fit int8"
    assert arrays["small"].tolist() == [5, -5]


def test_integers_refuse_fractions_and_accept_whole_floats() -> None:
    sources = [Source(MASK, ("m",))]
    arrays, ok, _errors = tensors(sources, {"m": column([1.0, 2.5, 3.0])}, 3)
    assert ok.tolist() == [True, False, True]
    assert arrays["mask"].tolist() == [1, 3]
    assert arrays["mask"].dtype == np.int64
