"""Row- and table-shaped bodies (MLflow, KServe V1) → tensors, and answers back: a table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pitstop.errors import InvalidInput
from pitstop.protocol.scoring import (
    Signature,
    csv_inputs,
    mlflow_inputs,
    mlflow_predictions,
    v1_inputs,
    v1_predictions,
)
from pitstop.protocol.tensor import TensorSpec

NAMED = Signature((TensorSpec("input", "FP64", (-1, 3)),), ("a", "b", "c"))
UNNAMED = Signature((TensorSpec("input", "FP32", (-1, 2)),))
TWO = Signature((TensorSpec("x", "INT64", (-1,)), TensorSpec("text", "BYTES", (-1,))))
ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


@pytest.mark.parametrize(
    ("body", "signature", "expected"),
    [
        # Columns by name, in any order; extra columns ignored (MLflow's schema enforcement).
        (
            {"dataframe_split": {"columns": ["c", "x", "a", "b"], "data": [[3, 0, 1, 2]]}},
            NAMED,
            {"input": [[1.0, 2.0, 3.0]]},
        ),
        (
            {"dataframe_records": [{"b": 2, "a": 1, "c": 3}, {"c": 6, "b": 5, "a": 4}]},
            NAMED,
            {"input": ROWS},
        ),
        ({"instances": ROWS}, NAMED, {"input": ROWS}),
        ({"inputs": ROWS}, NAMED, {"input": ROWS}),
        ({"inputs": {"a": [1, 4], "b": [2, 5], "c": [3, 6]}}, NAMED, {"input": ROWS}),
        ({"inputs": {"input": ROWS}}, NAMED, {"input": ROWS}),
        ({"dataframe_split": {"data": ROWS}}, NAMED, {"input": ROWS}),
        # No column names: by position, as many as the input is wide.
        (
            {"dataframe_split": {"columns": ["p", "q"], "data": [[1, 2]]}},
            UNNAMED,
            {"input": [[1, 2]]},
        ),
        # Several inputs: named by input.
        (
            {"dataframe_records": [{"x": 1, "text": "hé"}, {"x": 2, "text": "b"}]},
            TWO,
            {"x": [1, 2], "text": [b"h\xc3\xa9", b"b"]},
        ),
        ({"instances": [{"x": 1, "text": "a"}]}, TWO, {"x": [1], "text": [b"a"]}),
        ({"inputs": {"x": [1, 2], "text": ["a", "b"]}}, TWO, {"x": [1, 2], "text": [b"a", b"b"]}),
        # A key missing from a record is null there, as pandas builds the frame.
        (
            {"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"c": 6, "a": 4}]},
            NAMED,
            {"input": [[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]]},
        ),
        # null is NaN for a float input, as pandas reads it.
        ({"instances": [[None, 1.0]]}, UNNAMED, {"input": [[np.nan, 1.0]]}),
    ],
)
def test_mlflow_bodies(body: Any, signature: Signature, expected: dict[str, Any]) -> None:
    tensors = mlflow_inputs(body, signature)
    assert set(tensors) == set(expected)
    for name, values in expected.items():
        spec = next(s for s in signature.inputs if s.name == name)
        if spec.datatype == "BYTES":
            assert tensors[name].tolist() == values
        else:
            np.testing.assert_array_equal(
                tensors[name], np.array(values, dtype=tensors[name].dtype)
            )
            assert (
                tensors[name].dtype
                == {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64}[spec.datatype]
            )


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        ([1, 2], NAMED, "must be a JSON object"),
        (
            {},
            NAMED,
            "exactly one of: dataframe_split, dataframe_records, instances, inputs; got none",
        ),
        ({"instances": ROWS, "inputs": ROWS}, NAMED, "got instances, inputs"),
        ({"instances": ROWS, "params": {"k": 1}}, NAMED, "params: not supported"),
        ({"data": ROWS}, NAMED, "data: not supported"),
        (
            {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}},
            NAMED,
            "missing column 'c'",
        ),
        (
            {"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}},
            NAMED,
            "dataframe_split.data[0]: expected a list of 1 values",
        ),
        (
            {"dataframe_split": {"columns": ["a", "b", "c"]}},
            NAMED,
            "dataframe_split.data: required",
        ),
        (
            {"dataframe_records": [{"a": 1, "b": 2, "c": 3}, 4]},
            NAMED,
            "dataframe_records[1]: expected an object of column: value",
        ),
        ({"dataframe_records": []}, NAMED, "dataframe_records: required, a non-empty list"),
        ({"instances": [[1, 2, 3], [4, 5]]}, NAMED, "rows of different lengths"),
        ({"instances": [["x", 1, 2]]}, NAMED, "cannot read the values as FP64 for input 'input'"),
        (
            {"dataframe_split": {"columns": ["p"], "data": [[1]]}},
            UNNAMED,
            "1 columns, but input 'input' takes 2",
        ),
        (
            {"inputs": {"x": [1.5], "text": ["a"]}},
            TWO,
            "a number with a fraction for an integer input",
        ),
        ({"inputs": {"x": [1], "text": [3]}}, TWO, "input 'text' is BYTES; expected strings"),
        ({"inputs": {"x": [1]}}, TWO, "missing input 'text'"),
        ({"instances": [[1, "a"]]}, TWO, "the model has 2 inputs (x, text)"),
        ({"inputs": {"x": 1, "text": "a"}}, TWO, "inputs.x: expected a list"),
    ],
)
def test_mlflow_bodies_refused_with_the_field(
    body: Any, signature: Signature, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        mlflow_inputs(body, signature)
    assert message in str(caught.value)


def test_csv() -> None:
    tensors = csv_inputs(b"\xef\xbb\xbfc,b,a\r\n3,2,1\r\n6,5,\r\n", NAMED)
    np.testing.assert_array_equal(tensors["input"], [[1.0, 2.0, 3.0], [np.nan, 5.0, 6.0]])
    for content, message in [
        (b"", "CSV: empty"),
        (b"a,b,c\n", "a header row but no data rows"),
        (b"a,b,c\n1,2\n", "CSV: row 2 has 2 fields, the header has 3"),
        (b"a,a,c\n1,2,3\n", "duplicate column name"),
        (b"a,b,c\n1,x,3\n", "cannot read the values as FP64"),
        (b"a,b,c\n\xff,2,3\n", "CSV: not UTF-8"),
        (b"a,b\n1,2\n", "missing column 'c'"),
    ]:
        with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
            csv_inputs(content, NAMED)


def test_v1_rows_and_columns() -> None:
    tensors, columnar = v1_inputs({"instances": ROWS}, NAMED)
    assert not columnar
    np.testing.assert_array_equal(tensors["input"], ROWS)
    tensors, columnar = v1_inputs({"inputs": {"x": [1], "text": ["a"]}}, TWO)
    assert columnar
    assert tensors["text"].tolist() == [b"a"]
    for body in [{}, {"instances": ROWS, "inputs": ROWS}, []]:
        with pytest.raises(InvalidInput, match="instances"):
            v1_inputs(body, NAMED)


def test_answers() -> None:
    one = {"prediction": np.array([1, 0])}
    two = {"label": np.array([b"a", b"\xff"], dtype=object), "p": np.array([0.5, 0.25])}
    assert mlflow_predictions(one) == {"predictions": [1, 0]}
    assert mlflow_predictions(two) == {"predictions": {"label": ["a", "\ufffd"], "p": [0.5, 0.25]}}
    assert v1_predictions(one, columnar=False) == {"predictions": [1, 0]}
    assert v1_predictions(two, columnar=False) == {
        "predictions": [{"label": "a", "p": 0.5}, {"label": "\ufffd", "p": 0.25}]
    }
    assert v1_predictions(one, columnar=True) == {"outputs": [1, 0]}
    assert v1_predictions(two, columnar=True) == {
        "outputs": {"label": ["a", "\ufffd"], "p": [0.5, 0.25]}
    }
