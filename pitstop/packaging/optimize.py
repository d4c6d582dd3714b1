"""``pitstop optimize``: a quantised copy of a version, pushed as a new version with an accuracy
report in its metadata. Never promoted: no alias moves unless the caller names one.

Works on ONNX-based packages: runtime ``embeddings`` (the report is the cosine similarity of the
new embeddings to the old on the package's evaluation texts) and ``onnx`` (the report is how often
the predictions agree on the manifest's warm-up inputs). Both record the in-process throughput
ratio new/old. The new version's warm-up expectations are recomputed with the quantised model,
so every load still checks that the artifact computes what was measured here.

Accuracy targets (defaults per runtime in :data:`DEFAULT_TARGETS`) guard the result: when the
fully quantised model misses one, the MatMul nodes whose inputs carry the largest outliers
(:func:`outlier_ranking`) stay fp32, 1, 2, 4 ... up to ``max_fp32_nodes`` of them, until the
targets are met. The report says which nodes stayed fp32 and whether the targets were met; a
version that misses them is still pushed (unpromoted), with the figures to decide on.
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
from pitstop.packaging.evaluation import agreement_report, cosine_report, throughput_ratio
from pitstop.packaging.export import EVALUATION_FILE
from pitstop.protocol.json_codec import decode_request, encode_output
from pitstop.registry import ModelManifest, PushResult, Registry, VersionRecord, read_manifest
from pitstop.registry.names import parse_version_ref
from pitstop.runtimes.base import Runtime, SessionFeeds
from pitstop.runtimes.embeddings import EMBEDDING_OUTPUT
from pitstop.runtimes.quantize import outlier_ranking, quantize_onnx
from pitstop.serving.conformance import check_inputs
from pitstop.serving.warmup import build_runtime, load_and_validate

OPTIMIZABLE: Final = ("embeddings", "onnx")
EVAL_BATCH: Final = 32
DEFAULT_ARTIFACT: Final = "model.onnx"
DEFAULT_TARGETS: Final[Mapping[str, Mapping[str, float]]] = {
    "embeddings": {"cosine_mean": 0.99, "cosine_min": 0.98},
    "onnx": {"agreement": 0.99},
}
"""Minimum accuracy figures per runtime, unless the caller gives its own."""
RANKING_BATCHES: Final = 4
"""Evaluation batches the outlier ranking looks at."""


@dataclass(frozen=True)
class OptimizeResult:
    pushed: PushResult
    report: dict[str, Any]
    """What was measured: accuracy figures, throughput and the evaluation set size."""


def parse_reference(text: str) -> tuple[str, str]:
    """``name@alias``, ``name@3``, ``name:3`` or ``name`` (→ ``production``)."""
    return parse_version_ref(text)


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
    targets: Mapping[str, float] | None = None,
    max_fp32_nodes: int = 8,
) -> OptimizeResult:
    """Quantise version ``ref`` of ``model``, measure it against the original, push it.
    ``targets`` (figure → minimum) default to :data:`DEFAULT_TARGETS`; ``max_fp32_nodes`` 0
    quantises every node whatever the accuracy."""
    source = registry.version(model, ref)
    if source.runtime not in OPTIMIZABLE:
        raise Unsupported(
            f"{source.label} has runtime {source.runtime!r}; optimize supports {OPTIMIZABLE}"
        )
    goals = dict(DEFAULT_TARGETS[source.runtime] if targets is None else targets)
    original = registry.fetch(source)
    with tempfile.TemporaryDirectory(prefix="pitstop-optimize-") as workdir:
        target = Path(workdir) / "package"
        _copy_files(source, original, target)
        artifact = source.manifest.artifact or DEFAULT_ARTIFACT
        baseline = _loaded(original, source.manifest, threads)
        candidate: Runtime | None = None
        try:
            batches = _evaluation_batches(source, original, baseline)
            old = _predict_all(baseline, batches)

            def attempt(keep: Sequence[str]) -> tuple[Runtime, dict[str, Any]]:
                quantize_onnx(original / artifact, target / artifact, quantize, keep)
                runtime = _loaded(target, source.manifest, threads)
                return runtime, _accuracy(source.runtime, old, _predict_all(runtime, batches))

            keep: list[str] = []
            candidate, report = attempt(keep)
            if missed_targets(report, goals) and max_fp32_nodes > 0:
                candidate.unload()  # not needed while ranking; frees its memory
                ranking = _ranking(baseline, original / artifact, batches, threads)
                for count in fp32_steps(min(max_fp32_nodes, len(ranking))):
                    candidate.unload()
                    keep = ranking[:count]
                    candidate, report = attempt(keep)
                    if not missed_targets(report, goals):
                        break
                else:
                    if not keep:  # nothing to keep fp32: reload the fully quantised model
                        candidate = _loaded(target, source.manifest, threads)
            missed = missed_targets(report, goals)
            report["eval_rows"] = len(next(iter(old.values())))
            report["fp32_nodes"] = ",".join(keep)
            report["targets"] = ",".join(f"{k}>={v}" for k, v in goals.items())
            report["targets_met"] = not missed
            if missed:
                report["missed"] = "; ".join(missed)
            report.update(
                throughput_ratio(baseline.predict, candidate.predict, batches, bench_seconds)
            )
            _rewrite_expectations(target, candidate)
        finally:
            baseline.unload()
            if candidate is not None:
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


def fp32_steps(cap: int) -> list[int]:
    """How many top-ranked nodes stay fp32 in successive attempts: 1, 2, 4 ... and ``cap``."""
    steps = []
    count = 1
    while count < cap:
        steps.append(count)
        count *= 2
    return [*steps, cap] if cap > 0 else []


def parse_targets(texts: Sequence[str]) -> dict[str, float]:
    """``FIGURE=MIN`` texts (``cosine_min=0.98``) as a mapping; InvalidInput naming a bad one."""
    targets: dict[str, float] = {}
    for text in texts:
        figure, sep, value = text.partition("=")
        try:
            minimum = float(value)
        except ValueError:
            minimum = float("nan")
        if not sep or not figure or minimum != minimum:
            raise InvalidInput(f"--target {text!r}: expected FIGURE=MIN, e.g. cosine_min=0.98")
        targets[figure] = minimum
    return targets


def missed_targets(report: Mapping[str, Any], targets: Mapping[str, float]) -> list[str]:
    """Each target the report misses, as 'figure value < minimum'; a figure the report lacks
    is :class:`InvalidInput` (a target that can never be judged)."""
    missed = []
    for figure, minimum in targets.items():
        if figure not in report:
            known = ", ".join(sorted(k for k, v in report.items() if isinstance(v, float)))
            raise InvalidInput(f"target {figure!r}: the report has no such figure; it has {known}")
        if not report[figure] >= minimum:  # NaN misses too
            missed.append(f"{figure} {report[figure]} < {minimum}")
    return missed


def _accuracy(
    runtime: str, old: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    if runtime == "embeddings":
        return dict(cosine_report(old[EMBEDDING_OUTPUT], new[EMBEDDING_OUTPUT]))
    return dict(agreement_report(old, new))


def _ranking(
    baseline: Runtime, model: Path, batches: Sequence[Mapping[str, np.ndarray]], threads: int
) -> list[str]:
    """Node names, most outlier-prone first; empty when the runtime cannot show its feeds."""
    if not isinstance(baseline, SessionFeeds):
        return []
    feeds = [feed for batch in batches[:RANKING_BATCHES] for feed in baseline.session_feeds(batch)]
    return [node for node, _score in outlier_ranking(model, feeds, threads)]


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
