"""One version's runtime scoring a part's rows, a failing row failing alone.

The runtime is the one the server uses (``load_and_validate`` over the version's verified
folder), called directly with ``batch_rows`` rows at a time: no HTTP, no DataPlane. When a
runtime call raises, its rows are split in halves and retried until the rows that fail alone
are found (``log2(batch_rows)`` more calls per bad row); every other row keeps its answer. A
process-wide scorer (:func:`start` / :func:`score_part`) serves the local engine's workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pitstop.errors import PitstopError
from pitstop.protocol.columns import Column, Source, tensors
from pitstop.protocol.datatype import numpy_dtype
from pitstop.protocol.tensor import TensorSpec
from pitstop.registry import ModelManifest
from pitstop.runtimes.base import Runtime
from pitstop.serving.warmup import load_and_validate


@dataclass(frozen=True)
class Scored:
    """A part's result: outputs of the rows scored, in order; which rows those are; why the
    others are not (row offset within the part → reason)."""

    outputs: dict[str, np.ndarray]
    ok: np.ndarray
    errors: dict[int, str]


class Scorer:
    """A loaded runtime of one version."""

    def __init__(
        self, path: Path, manifest: ModelManifest, *, trust_pickle: bool, trust_code: bool
    ) -> None:
        runtime, metadata, _report = load_and_validate(
            path, manifest, trust_pickle=trust_pickle, trust_code=trust_code, threads=1, runs=0
        )
        self._runtime: Runtime = runtime
        self._closed = False
        self.inputs: tuple[TensorSpec, ...] = manifest.inputs or metadata.inputs
        self.outputs: tuple[TensorSpec, ...] = manifest.outputs or metadata.outputs

    def close(self) -> None:
        """Unload the runtime (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            self._runtime.unload()

    def score(
        self, sources: Sequence[Source], columns: Mapping[str, Column], rows: int, batch_rows: int
    ) -> Scored:
        inputs, ok, errors = tensors(sources, columns, rows)
        positions = np.flatnonzero(ok)
        results: list[dict[str, np.ndarray] | None] = []
        failed: dict[int, str] = {}
        for start in range(0, len(positions), batch_rows):
            chunk = {name: array[start : start + batch_rows] for name, array in inputs.items()}
            self._run(chunk, start, results, failed)
        if failed:
            for offset, reason in failed.items():
                row = int(positions[offset])
                errors[row] = reason
                ok[row] = False
        kept = [r for r in results if r is not None]
        if kept:
            outputs = {name: np.concatenate([r[name] for r in kept]) for name in kept[0]}
        else:  # nothing scored in this part: the same columns, empty
            outputs = {spec.name: _empty(spec) for spec in self.outputs}
        return Scored(outputs, ok, errors)

    def _run(
        self,
        chunk: dict[str, np.ndarray],
        first: int,
        results: list[dict[str, np.ndarray] | None],
        failed: dict[int, str],
    ) -> None:
        """Predict ``chunk`` (rows ``first``, ... of the scorable rows); on failure bisect."""
        rows = len(next(iter(chunk.values())))
        try:
            outputs = self._runtime.predict(chunk)
            for name, array in outputs.items():
                if len(array) != rows:
                    raise PitstopError(f"output {name!r} has {len(array)} rows for {rows}")
            results.append(dict(outputs))
            return
        except Exception as exc:
            if rows == 1:
                failed[first] = f"the model failed on this row: {exc}"[:500]
                return
        half = rows // 2
        self._run({k: v[:half] for k, v in chunk.items()}, first, results, failed)
        self._run({k: v[half:] for k, v in chunk.items()}, first + half, results, failed)


def _empty(spec: TensorSpec) -> np.ndarray:
    dims = tuple(max(d, 1) for d in spec.shape[1:])
    dtype = numpy_dtype(spec.datatype) if spec.datatype != "BF16" else np.dtype(np.float32)
    return np.zeros((0, *dims), dtype=dtype)


_SCORER: Scorer | None = None


def start(path: str, manifest: dict[str, Any], trust_pickle: bool, trust_code: bool) -> None:
    """A worker process's initializer: load the runtime once."""
    global _SCORER
    _SCORER = Scorer(
        Path(path), ModelManifest.from_json(manifest),
        trust_pickle=trust_pickle, trust_code=trust_code,
    )  # fmt: skip


def score_part(
    sources: Sequence[Source], columns: Mapping[str, Column], rows: int, batch_rows: int
) -> Scored:
    """Score in this worker process (after :func:`start`)."""
    if _SCORER is None:
        raise RuntimeError("scorer.start() was not called in this process")
    return _SCORER.score(sources, columns, rows, batch_rows)
