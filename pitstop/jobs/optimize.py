"""``pitstop optimize``: a quantised copy of a version, pushed as a new version with an accuracy
report in its metadata. Never promoted: no alias moves unless the caller names one.

Works on ONNX-based packages: runtime ``embeddings`` (the report is the cosine similarity of the
new embeddings to the old on the package's evaluation texts) and ``onnx`` (the report is how often
the predictions agree on the manifest's warm-up inputs). Both record the in-process throughput
ratio new/old. The new version's warm-up expectations are recomputed with the quantised model,
so every load still checks that the artifact computes what was measured here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from pitstop.errors import InvalidInput, Unsupported
from pitstop.jobs.evaluation import agreement_report, cosine_report, throughput_ratio
from pitstop.jobs.export import EVALUATION_FILE
from pitstop.protocol.json_codec import decode_request, encode_output
from pitstop.registry import ModelManifest, PushResult, Registry, VersionRecord, read_manifest
from pitstop.runtimes.base import Runtime
from pitstop.runtimes.embeddings import EMBEDDING_OUTPUT
from pitstop.runtimes.quantize import quantize_onnx
from pitstop.serving.signature import check_inputs
from pitstop.serving.warmup import build_runtime, load_and_validate

OPTIMIZABLE: Final = ("embeddings", "onnx")
EVAL_BATCH: Final = 32
DEFAULT_ARTIFACT: Final = "model.onnx"


@dataclass(frozen=True)
class OptimizeResult:
    pushed: PushResult
    report: dict[str, Any]
    """What was measured: accuracy figures, throughput and the evaluation set size."""


def parse_reference(text: str) -> tuple[str, str]:
    """``name@alias``, ``name@3`` or ``name`` (→ ``production``) as (model, version ref)."""
    model, sep, ref = text.partition("@")
    if not model or (sep and not ref):
        raise InvalidInput(f"{text!r}: expected MODEL, MODEL@ALIAS or MODEL@VERSION")
    return model, ref or "production"


def optimize(
    registry: Registry,
    model: str,
    ref: str,
    *,
    quantize: str,
    actor: str,
    aliases: Sequence[str] = (),
    reason: str | None = None,
    threads: int = 1,
    bench_seconds: float = 3.0,
) -> OptimizeResult:
    """Quantise version ``ref`` of ``model``, measure it against the original, push it."""
    source = registry.version(model, ref)
    if source.runtime not in OPTIMIZABLE:
        raise Unsupported(
            f"{source.label} has runtime {source.runtime!r}; optimize supports {OPTIMIZABLE}"
        )
    original = registry.fetch(source)
    with tempfile.TemporaryDirectory(prefix="pitstop-optimize-") as workdir:
        target = Path(workdir) / "package"
        _copy_files(source, original, target)
        artifact = source.manifest.artifact or DEFAULT_ARTIFACT
        quantize_onnx(original / artifact, target / artifact, quantize)
        baseline = _loaded(original, source.manifest, threads)
        candidate = _loaded(target, source.manifest, threads)
        try:
            batches = _evaluation_batches(source, original, baseline)
            old = _predict_all(baseline, batches)
            new = _predict_all(candidate, batches)
            if source.runtime == "embeddings":
                report: dict[str, Any] = cosine_report(old[EMBEDDING_OUTPUT], new[EMBEDDING_OUTPUT])
            else:
                report = agreement_report(old, new)
            report["eval_rows"] = len(next(iter(old.values())))
            report.update(
                throughput_ratio(baseline.predict, candidate.predict, batches, bench_seconds)
            )
            _rewrite_expectations(target, candidate)
        finally:
            baseline.unload()
            candidate.unload()
        runtime, _metadata, _warmup = load_and_validate(
            target, read_manifest(target), trust_pickle=False, trust_code=False, threads=1, runs=2
        )
        runtime.unload()
        meta = {
            **source.meta,
            "optimized_from": f"v{source.number}",
            "quantization": quantize,
            **{key: str(value) for key, value in report.items()},
        }
        pushed = registry.push(
            target,
            name=model,
            aliases=aliases,
            meta=meta,
            actor=actor,
            reason=reason or f"{quantize} quantization of v{source.number}",
        )
    return OptimizeResult(pushed=pushed, report=report)


def _copy_files(record: VersionRecord, source: Path, target: Path) -> None:
    # File by file, without permission bits: the store's copies are read-only.
    for entry in record.files:
        destination = target / entry.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes((source / entry.path).read_bytes())


def _loaded(folder: Path, manifest: ModelManifest, threads: int) -> Runtime:
    runtime = build_runtime(folder, manifest, trust_pickle=False, trust_code=False, threads=threads)
    runtime.load()
    return runtime


def _evaluation_batches(
    record: VersionRecord, folder: Path, runtime: Runtime
) -> list[dict[str, np.ndarray]]:
    """Embeddings: the package's evaluation texts in batches; otherwise the warm-up inputs."""
    metadata = runtime.metadata()
    evaluation = folder / EVALUATION_FILE
    if record.runtime == "embeddings" and evaluation.is_file():
        texts = [str(text).encode("utf-8") for text in json.loads(evaluation.read_text())]
        spec = metadata.inputs[0]
        rows = np.array(texts, dtype=object).reshape(-1, *spec.shape[1:])
        return [{spec.name: rows[i : i + EVAL_BATCH]} for i in range(0, len(rows), EVAL_BATCH)]
    batches = [
        check_inputs(decode_request(dict(example)), metadata.inputs)
        for example in record.manifest.warmup
    ]
    if not batches:
        raise Unsupported(
            f"{record.label} has no evaluation set: add warm-up examples to its manifest"
        )
    return batches


def _predict_all(
    runtime: Runtime, batches: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    parts = [runtime.predict(batch) for batch in batches]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _rewrite_expectations(folder: Path, runtime: Runtime) -> None:
    """Replace each warm-up example's expected outputs with what ``runtime`` computes."""
    path = folder / "pitstop.yaml"
    if not path.is_file():
        raise Unsupported(f"{folder} has no pitstop.yaml to rewrite (MLflow packages)")
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    metadata = runtime.metadata()
    for example in document.get("warmup") or []:
        expected = example.get("expected_outputs")
        if not expected:
            continue
        produced = runtime.predict(check_inputs(decode_request(dict(example)), metadata.inputs))
        example["expected_outputs"] = [
            _rounded(encode_output(item["name"], produced[item["name"]])) for item in expected
        ]
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=100), encoding="utf-8")


def _rounded(tensor: dict[str, Any]) -> dict[str, Any]:
    if tensor["datatype"] in ("FP32", "FP64"):
        tensor["data"] = [round(float(value), 7) for value in tensor["data"]]
    return tensor
