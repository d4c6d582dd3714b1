"""What a version answers, summarised: the vectorised counts equal one-at-a-time counting."""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
import pytest

from pitstop.monitoring.histogram import SCORE_BUCKETS, Histogram
from pitstop.monitoring.outputs import (
    MAX_CLASSES,
    OTHER,
    OutputBehaviour,
    OutputKind,
    kind_of,
    row_values,
)


@pytest.mark.parametrize(
    ("array", "kind", "values"),
    [
        (np.array([2, 0, 1], np.int64), OutputKind.LABEL, [2.0, 0.0, 1.0]),
        (np.array([[1], [3]], np.int32), OutputKind.LABEL, [1.0, 3.0]),
        (np.array([0.5, 1.5], np.float32), OutputKind.SCORE, [0.5, 1.5]),
        (np.array([[0.1, 0.9], [0.8, 0.2]]), OutputKind.PROBABILITIES, [1.0, 0.0]),
        (np.full((2, 33), 0.5), OutputKind.EMBEDDING, [np.sqrt(33 * 0.25)] * 2),
        (np.array([[4, 5], [6, 7]], np.int64), OutputKind.CODES, [4.0, 6.0]),
        (np.array(["a", "a"], dtype=object), OutputKind.LABEL, None),
    ],
)
def test_one_kind_and_one_number_per_row(
    array: np.ndarray, kind: OutputKind, values: list[float] | None
) -> None:
    assert kind_of(array) is kind
    numbers = row_values(array)
    assert numbers.shape == (len(array),)
    if values is None:  # text: hashed, equal labels give equal numbers
        assert numbers[0] == numbers[1]
    else:
        np.testing.assert_allclose(numbers, values)


@pytest.mark.parametrize(
    ("outputs", "classes"),
    [
        ({"label": np.array([2, 0, 2, 1], dtype=np.int64)}, {"0": 1, "1": 1, "2": 2}),
        ({"label": np.array([[1], [1]], dtype=np.int32)}, {"1": 2}),
        ({"p": np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)}, {"1": 2, "0": 1}),
        ({"label": np.array([True, False, True])}, {"1": 2, "0": 1}),
        ({"label": np.zeros((0,), np.int64)}, {}),
    ],
)
def test_classes_are_counted_per_label(
    outputs: dict[str, np.ndarray], classes: dict[str, int]
) -> None:
    behaviour = OutputBehaviour()
    behaviour.observe(outputs)
    assert behaviour.kind in (OutputKind.LABEL, OutputKind.PROBABILITIES)
    assert behaviour.classes == classes


def test_empty_answers_after_the_kind_is_known_count_nothing() -> None:
    behaviour = OutputBehaviour()
    behaviour.observe({"label": np.array([1], dtype=np.int64)})
    for empty in (np.zeros((3, 0), np.int64), np.zeros((0, 1), np.int64), np.array(4)):
        behaviour.observe({"label": empty})
    assert behaviour.classes == {"1": 1}


def test_labels_beyond_the_maximum_are_counted_as_other_across_responses() -> None:
    behaviour = OutputBehaviour()
    behaviour.observe({"label": np.arange(MAX_CLASSES - 2, dtype=np.int64)})
    behaviour.observe({"label": np.array([0, 1000, 1001, 1002, 1003, 1003, 0], dtype=np.int64)})
    classes = behaviour.classes
    assert len(classes) == MAX_CLASSES + 1
    assert classes["0"] == 3
    assert classes["1000"] == 1  # the room left, taken in ascending order
    assert classes["1001"] == 1
    assert classes[OTHER] == 3  # 1002 once, 1003 twice
    assert sum(classes.values()) == MAX_CLASSES - 2 + 7


@pytest.mark.parametrize("rows", [1, 64, 65, 5000])
def test_small_and_large_responses_count_alike(rows: int) -> None:
    """Up to FEW_ROWS rows are counted one by one, more vectorised: the same counts either way."""
    labels = np.random.default_rng(rows).integers(0, 80, rows)
    whole, split = OutputBehaviour(), OutputBehaviour()
    whole.observe({"label": labels})
    for row in labels:
        split.observe({"label": np.array([row])})
    assert sum(whole.classes.values()) == sum(split.classes.values()) == rows
    assert len(whole.classes) == len(split.classes) <= MAX_CLASSES + 1
    if rows <= MAX_CLASSES:
        assert whole.classes == split.classes


def test_a_million_row_response_is_summarised_in_milliseconds() -> None:
    behaviour = OutputBehaviour()
    rows = np.random.default_rng(0).integers(0, 10_000, 1_000_000)
    behaviour.observe({"label": rows})
    assert sum(behaviour.classes.values()) == 1_000_000
    assert len(behaviour.classes) == MAX_CLASSES + 1


def test_vectorised_scores_land_in_the_same_buckets_as_one_by_one() -> None:
    values = np.concatenate([np.random.default_rng(1).random(1000) * 1.2, SCORE_BUCKETS])
    behaviour = OutputBehaviour()
    behaviour.observe({"score": values.reshape(-1, 1)})
    expected = Histogram(SCORE_BUCKETS)
    for value in values.tolist():
        expected.observe(value)
    assert behaviour.scores.counts.tolist() == expected.counts.tolist()
    assert behaviour.scores.total == pytest.approx(expected.total)
    assert expected.counts[bisect_left(SCORE_BUCKETS, 0.5)] > 0
