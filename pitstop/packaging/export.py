"""``pitstop import sentence-transformers``: a sentence-transformers model → an ``embeddings``
package, exported to ONNX with torch and pushed as a new version.

torch and transformers are needed here only (the ``torch`` extra), and are imported inside
:func:`export_package`. The transformer is exported with torch's classic (TorchScript) exporter,
``dynamo=False``, with dynamic batch and sequence axes; pooling and normalisation stay outside
the graph, in the runtime, as the model's configuration says. The package gets:

- ``model.onnx`` and ``tokenizer.json``;
- ``evaluation.json``: the evaluation texts (:func:`pitstop.packaging.evaluation.evaluation_texts`);
- ``reference.json``: the centroid, norm and cosine-to-centroid profile of their embeddings, the
  reference for behaviour monitoring;
- ``pitstop.yaml``: runtime ``embeddings``, a warm-up example whose expected embeddings come from
  the torch model (so the ONNX conversion is checked at push and at every load), and batching.

Everything is read from local files; nothing is downloaded.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from pitstop.errors import LoadError, Unsupported
from pitstop.monitoring.behaviour import EmbeddingBehaviour
from pitstop.packaging.evaluation import evaluation_texts
from pitstop.packaging.sentence_model import (
    TOKENIZER_FILE,
    SentenceModel,
    locate,
    read_sentence_model,
)
from pitstop.registry import PushResult, Registry, read_manifest
from pitstop.runtimes.embeddings import EMBEDDING_OUTPUT, TEXT_INPUT
from pitstop.serving.warmup import load_and_validate

MODEL_FILE: Final = "model.onnx"
EVALUATION_FILE: Final = "evaluation.json"
REFERENCE_FILE: Final = "reference.json"
MANIFEST_FILE: Final = "pitstop.yaml"

BATCHING: Final[dict[str, Any]] = {
    "max_batch_size": 64,
    "max_queue_delay_microseconds": 2000,
    "instances": 2,
}
"""Concurrent single requests are batched up to 64 texts, waiting at most 2 ms for company, and
two batches run at once: with the default ``runtime_threads`` of 1 that keeps both cores of the
reference machine busy, and measured ~8% faster than one batch on 2 intra-op threads."""

WARMUP_TEXTS: Final = (
    "pitstop serves sentence embeddings.",
    "A second, longer sentence makes the warm-up batch need padding and an attention mask.",
)
WARMUP_TOLERANCE: Final = {"rtol": 1e-3, "atol": 1e-4}
"""fp32 onnxruntime vs torch differ by ~1e-7 on normalised MiniLM embeddings; this leaves room
for other kernels while still catching a wrong graph, pooling or tokenizer."""

OPSET: Final = 17
_INPUT_NAMES: Final = ("input_ids", "attention_mask", "token_type_ids")


def import_sentence_transformer(
    registry: Registry,
    source: str,
    *,
    name: str,
    aliases: Sequence[str] = (),
    actor: str,
    reason: str | None = None,
    max_seq_length: int | None = None,
) -> PushResult:
    """Export the model ``source`` names (folder or installed package), validate the package by
    loading it and running its warm-up (ONNX vs torch), and push it as a version of ``name``."""
    model = read_sentence_model(locate(source), max_seq_length)
    with tempfile.TemporaryDirectory(prefix="pitstop-export-") as workdir:
        package = export_package(model, Path(workdir) / "package")
        runtime, _metadata, _report = load_and_validate(
            package, read_manifest(package), trust_pickle=False, trust_code=False, threads=1, runs=2
        )
        runtime.unload()
        meta = {
            "source": str(model.folder),
            "format": "sentence-transformers",
            "pooling": model.pooling,
            "normalize": str(model.normalize).lower(),
            "max_seq_length": str(model.max_seq_length),
        }
        return registry.push(
            package, name=name, aliases=aliases, meta=meta, actor=actor, reason=reason
        )


def export_package(model: SentenceModel, target: Path, batch_size: int = 32) -> Path:
    """Write the package for ``model`` into ``target`` (created; must not exist) and return it."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise Unsupported(
            f"exporting needs torch and transformers: pip install 'pitstop[torch]' ({exc})"
        ) from exc
    import tokenizers

    target.mkdir(parents=True)
    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        transformer = transformers.AutoModel.from_pretrained(
            str(model.folder), local_files_only=True, attn_implementation="eager"
        )
    except Exception as exc:
        raise LoadError(f"transformers cannot load {model.folder}: {exc}") from exc
    transformer.eval()
    tokenizer = tokenizers.Tokenizer.from_file(str(model.tokenizer))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=model.max_seq_length)
    takes_type_ids = "token_type_ids" in inspect.signature(transformer.forward).parameters

    def encode(texts: Sequence[str]) -> dict[str, Any]:
        encodings = tokenizer.encode_batch(list(texts))
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        names = _INPUT_NAMES if takes_type_ids else _INPUT_NAMES[:2]
        return {key: torch.from_numpy(arrays[key]) for key in names}

    class TokenEmbeddings(torch.nn.Module):
        """The transformer with keyword inputs and one tensor output, as the exporter wants."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: Any) -> Any:
            names = _INPUT_NAMES[: len(inputs)]
            return self.transformer(**dict(zip(names, inputs, strict=True))).last_hidden_state

    def embed(texts: Sequence[str]) -> np.ndarray:
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                feed = encode(texts[start : start + batch_size])
                hidden = transformer(**feed).last_hidden_state
                chunks.append(_pool(hidden.numpy(), feed["attention_mask"].numpy(), model))
        return np.concatenate(chunks).astype(np.float32)

    example = encode(WARMUP_TEXTS)
    names = list(example)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "token_embeddings"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TokenEmbeddings().eval(),
            tuple(example.values()),
            str(target / MODEL_FILE),
            input_names=names,
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    shutil.copyfile(model.tokenizer, target / TOKENIZER_FILE)

    texts = evaluation_texts()
    _write_json(target / EVALUATION_FILE, texts)
    _write_json(target / REFERENCE_FILE, _reference(embed(texts)))
    _write_manifest(target, model, embed(list(WARMUP_TEXTS)))
    return target


def _pool(hidden: np.ndarray, mask: np.ndarray, model: SentenceModel) -> np.ndarray:
    if model.pooling == "cls":
        pooled = hidden[:, 0, :]
    else:
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    if model.normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


def _reference(embeddings: np.ndarray) -> dict[str, Any]:
    centroid = embeddings.astype(np.float64).mean(axis=0)
    profile = EmbeddingBehaviour.for_centroid(centroid.tolist())
    profile.observe(embeddings)
    return {
        "output": EMBEDDING_OUTPUT,
        "centroid": [round(float(v), 7) for v in centroid],
        "rows": int(embeddings.shape[0]),
        **profile.to_json(),
    }


def _write_manifest(target: Path, model: SentenceModel, expected: np.ndarray) -> None:
    count = len(WARMUP_TEXTS)
    manifest = {
        "runtime": "embeddings",
        "artifact": MODEL_FILE,
        "inputs": [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": EMBEDDING_OUTPUT, "datatype": "FP32", "shape": [-1, model.dimension]},
            {"name": "tokens", "datatype": "INT32", "shape": [-1]},
            {"name": "truncated", "datatype": "BOOL", "shape": [-1]},
        ],
        "parameters": {
            "tokenizer": TOKENIZER_FILE,
            "pooling": model.pooling,
            "normalize": model.normalize,
            "max_seq_length": model.max_seq_length,
            "reference": REFERENCE_FILE,
        },
        "warmup": [
            {
                "inputs": [
                    {
                        "name": TEXT_INPUT,
                        "datatype": "BYTES",
                        "shape": [count],
                        "data": list(WARMUP_TEXTS),
                    }
                ],
                "expected_outputs": [
                    {
                        "name": EMBEDDING_OUTPUT,
                        "datatype": "FP32",
                        "shape": [count, model.dimension],
                        "data": [round(float(v), 7) for v in expected.reshape(-1)],
                    }
                ],
                "tolerance": dict(WARMUP_TOLERANCE),
            }
        ],
        "batching": dict(BATCHING),
    }
    text = yaml.safe_dump(manifest, sort_keys=False, width=100)
    (target / MANIFEST_FILE).write_text(text, encoding="utf-8")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
