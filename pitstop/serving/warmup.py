"""Building a runtime from a package and proving it works before it takes traffic.

A version's manifest may carry warm-up examples. Each runs ``runs`` times (at least twice); where it
gives ``expected_outputs`` the outputs must match within its tolerance, else the version is not
loaded. If two runs of the same example differ, the version is flagged non-deterministic (served,
with a warning, and never response-cached). A decoupled model's examples run all its responses
and compare the last. The same check runs at push time (``pitstop models
push``) and at every load, so a broken artifact or conversion is caught before any user sees it.

Example (``pitstop.yaml``)::

    warmup:
      - inputs: [{name: x, datatype: FP32, shape: [1, 4], data: [5.1, 3.5, 1.4, 0.2]}]
        expected_outputs: [{name: label, datatype: INT64, shape: [1], data: [0]}]
        tolerance: {rtol: 1.0e-4, atol: 1.0e-5}
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from pitstop.errors import InvalidInput, LoadError, NotIsolatable, PitstopError
from pitstop.protocol.json_codec import decode_input, decode_request
from pitstop.registry import ModelManifest
from pitstop.registry.options import IsolationOptions
from pitstop.runtimes.base import (
    Responder,
    Runtime,
    RuntimeContext,
    RuntimeMetadata,
    resolve_runtime,
)
from pitstop.runtimes.isolated import IsolatedRuntime
from pitstop.serving.conformance import check_inputs

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5


@dataclass(frozen=True)
class WarmupReport:
    examples: int
    """How many examples ran."""
    deterministic: bool
    """False when two runs of one example gave different outputs."""
    checked_outputs: int
    """How many expected outputs were compared (and matched)."""
    memory_bytes: int | None = None
    """What loading and warming up the version added to the process holding it (its worker's
    whole RSS when isolated); None when not measured."""


def build_runtime(
    path: Path,
    manifest: ModelManifest,
    *,
    trust_pickle: bool,
    trust_code: bool,
    threads: int,
    in_process: bool = False,
) -> Runtime:
    """The runtime for a package folder, constructed but not loaded (construction does no I/O):
    in a worker process when :func:`isolation_of` says so, else in this one."""
    context = RuntimeContext(
        path=path,
        artifact=manifest.artifact,
        inputs=tuple(manifest.inputs),
        outputs=tuple(manifest.outputs),
        parameters=dict(manifest.parameters),
        columns=manifest.columns,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
        threads=threads,
    )
    isolation = None if in_process else isolation_of(manifest)
    if isolation is not None:
        return IsolatedRuntime(
            manifest.runtime, context, memory_limit_bytes=isolation.memory_limit,
            call_timeout_s=isolation.timeout_s, python=isolation.python,
        )  # fmt: skip
    return resolve_runtime(manifest.runtime)(context)


ISOLATED_BY_DEFAULT: Final = frozenset({"python"})
"""Runtimes that run user code: in a worker process unless the manifest says otherwise."""


def isolation_of(manifest: ModelManifest) -> IsolationOptions | None:
    """How a version's runtime is isolated: the manifest's ``isolation`` (None for ``none``),
    else a worker process with default options for :data:`ISOLATED_BY_DEFAULT` runtimes."""
    if manifest.isolation is not None:
        return manifest.isolation if manifest.isolation.process else None
    return IsolationOptions() if manifest.runtime in ISOLATED_BY_DEFAULT else None


def warm_up(
    runtime: Runtime,
    metadata: RuntimeMetadata,
    examples: Sequence[Mapping[str, Any]],
    runs: int,
) -> WarmupReport:
    """Run every example ``max(runs, 2)`` times; raise :class:`LoadError` on any failure or
    mismatch with the example's expected outputs."""
    deterministic = True
    checked = 0
    for index, example in enumerate(examples):
        try:
            inputs = check_inputs(decode_request(dict(example)), metadata.inputs)
            first = _run(runtime, metadata, inputs)
            for _ in range(max(runs, 2) - 1):
                again = _run(runtime, metadata, inputs)
                deterministic = deterministic and _same(first, again)
            checked += _check_expected(first, example, index)
        except LoadError:
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, PitstopError) else f"{type(exc).__name__}: {exc}"
            raise LoadError(f"warm-up example {index} failed: {reason}") from exc
    return WarmupReport(
        examples=len(examples), deterministic=deterministic, checked_outputs=checked
    )


def _run(
    runtime: Runtime, metadata: RuntimeMetadata, inputs: Mapping[str, np.ndarray]
) -> Mapping[str, np.ndarray]:
    """One run of an example: ``predict``, or for a decoupled model every response, of which
    the last is compared (a model that answers with none has no outputs to compare)."""
    if not metadata.decoupled or not isinstance(runtime, Responder):
        return runtime.predict(inputs)
    last: Mapping[str, np.ndarray] = {}
    for each in runtime.responses(inputs):
        last = each
    return last


def load_and_validate(
    path: Path,
    manifest: ModelManifest,
    *,
    trust_pickle: bool,
    trust_code: bool,
    threads: int,
    runs: int,
) -> tuple[Runtime, RuntimeMetadata, WarmupReport]:
    """Check the manifest's serving options, construct, load and warm up; the runtime is
    unloaded again if anything fails."""
    if manifest.problem is not None:
        raise InvalidInput(f"pitstop.yaml: {manifest.problem}")
    runtime = build_runtime(
        path, manifest, trust_pickle=trust_pickle, trust_code=trust_code, threads=threads
    )
    try:
        _load_serially(runtime, manifest.runtime)
    except NotIsolatable:
        if manifest.isolation is not None:
            raise  # asked for explicitly: say why it cannot be
        # A decoupled handler (its predict yields) cannot cross the worker's pipe yet: by
        # default it runs in the server process, as it did before isolation existed.
        runtime = build_runtime(
            path, manifest, trust_pickle=trust_pickle, trust_code=trust_code, threads=threads,
            in_process=True,
        )  # fmt: skip
        _load_serially(runtime, manifest.runtime)
    try:
        metadata = runtime.metadata()
        if metadata.decoupled and manifest.batching is not None:
            raise LoadError(
                "a decoupled model (its handler yields responses) is not batched: "
                "remove batching from pitstop.yaml"
            )
        report = warm_up(runtime, metadata, manifest.warmup, runs)
    except BaseException:
        runtime.unload()
        raise
    return runtime, metadata, report


_LOAD_LOCKS: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_LOAD_LOCK_WAIT_S = 60.0


def _load_serially(runtime: Runtime, name: str) -> None:
    """``runtime.load()``, one at a time per runtime name.

    Loading deserialises and imports the framework lazily; two threads doing that for the same
    framework at once can see a module half-initialised (scikit-learn raised "partially
    initialized module" here when two versions loaded at start-up). A load that hangs must not
    block the others forever, so after a minute's wait a load proceeds without the lock.
    """
    if isinstance(runtime, IsolatedRuntime):
        runtime.load()  # imports happen in the worker's own process: nothing to race
        return
    lock = _LOAD_LOCKS[name]
    held = lock.acquire(timeout=_LOAD_LOCK_WAIT_S)
    try:
        runtime.load()
    finally:
        if held:
            lock.release()


def _same(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    if a.keys() != b.keys():
        return False
    for name, left in a.items():
        left, right = np.asarray(left), np.asarray(b[name])
        if left.shape != right.shape:
            return False
        if left.dtype.kind in "fc":
            if not np.array_equal(left, right, equal_nan=True):
                return False
        elif not np.array_equal(left, right):
            return False
    return True


def _check_expected(
    produced: Mapping[str, np.ndarray], example: Mapping[str, Any], index: int
) -> int:
    expected = example.get("expected_outputs")
    if expected is None:
        return 0
    if not isinstance(expected, list):
        raise InvalidInput(f"warmup[{index}].expected_outputs must be a list of tensors")
    tolerance = example.get("tolerance") or {}
    rtol = float(tolerance.get("rtol", DEFAULT_RTOL))
    atol = float(tolerance.get("atol", DEFAULT_ATOL))
    for position, raw in enumerate(expected):
        name, _datatype, want = decode_input(raw, f"warmup[{index}].expected_outputs[{position}]")
        got = produced.get(name)
        if got is None:
            raise LoadError(f"warm-up example {index}: the model produced no output {name!r}")
        got = np.asarray(got)
        if got.shape != want.shape:
            raise LoadError(
                f"warm-up example {index}: output {name!r} has shape {list(got.shape)}, "
                f"expected {list(want.shape)}"
            )
        if want.dtype.kind in "fc" or got.dtype.kind in "fc":
            matches = np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
        else:
            matches = np.array_equal(got, want)
        if not matches:
            raise LoadError(
                f"warm-up example {index}: output {name!r} is {got.reshape(-1)[:8].tolist()}, "
                f"expected {want.reshape(-1)[:8].tolist()} (rtol={rtol:g}, atol={atol:g})"
            )
    return len(expected)
