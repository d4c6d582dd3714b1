"""Running behaviour statistics of served embeddings (pitstop.monitoring.behaviour)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pitstop.monitoring.behaviour import BehaviourRecorder, EmbeddingBehaviour, Running


def test_running_matches_numpy_over_several_updates() -> None:
    values = np.random.default_rng(0).normal(3.0, 2.0, size=1000)
    running = Running()
    for chunk in np.array_split(values, 7):
        running.add(chunk)
    assert running.count == 1000
    assert running.mean == pytest.approx(values.mean())
    assert running.std == pytest.approx(values.std(ddof=1))
    assert (running.minimum, running.maximum) == (values.min(), values.max())


def test_running_empty_and_single() -> None:
    running = Running()
    assert math.isnan(running.mean)
    assert running.to_json() == {"count": 0}
    running.add(np.array([2.0]))
    assert (running.mean, running.std) == (2.0, 0.0)


@pytest.mark.parametrize(
    ("rows", "norm", "cosine"),
    [
        ([[2.0, 0.0]], 2.0, 1.0),  # along the centroid
        ([[0.0, 3.0]], 3.0, 0.0),  # orthogonal
        ([[-1.0, 0.0]], 1.0, -1.0),  # opposite
    ],
)
def test_embedding_norm_and_cosine(rows: list[list[float]], norm: float, cosine: float) -> None:
    behaviour = EmbeddingBehaviour.for_centroid([5.0, 0.0])
    behaviour.observe(np.array(rows, dtype=np.float32))
    assert behaviour.norm.mean == pytest.approx(norm)
    assert behaviour.cosine.mean == pytest.approx(cosine)


def test_recorder_keeps_versions_apart_and_ignores_models_without_centroid() -> None:
    recorder = BehaviourRecorder()
    embedding = {"embedding": np.array([[1.0, 0.0], [0.0, 1.0]])}
    recorder.observe("m", 1, {"embedding": (1.0, 0.0)}, embedding)
    recorder.observe("m", 2, {"embedding": (0.0, 1.0)}, embedding)
    recorder.observe("m", 2, {"embedding": (0.0, 1.0)}, embedding)
    recorder.observe("other", 1, {}, embedding)
    assert recorder.snapshot("m", 1)["embedding"]["cosine_to_centroid"]["count"] == 2
    assert recorder.snapshot("m", 2)["embedding"]["norm"]["count"] == 4
    assert recorder.snapshot("other", 1) == {}
    recorder.forget("m", 1)
    assert recorder.snapshot("m", 1) == {}
    assert recorder.snapshot("m", 2) != {}
