"""Input drift per version: a bounded window of live inputs, scored against the reference profile.

Recording (:meth:`DriftMonitor.record`, on the request path) copies at most
:data:`ROWS_PER_REQUEST` rows of each numeric input into a fixed ring per version: O(1), no I/O,
no lock (event loop only), and never more memory than ``window_rows`` x features. A version
without a stored reference also fills a reference buffer with the first ``reference_rows`` rows
it serves.

:meth:`DriftMonitor.tick` runs periodically from one owned background task: it reads missing
references from the :class:`ReferenceStore` (in a thread), stores a reference built from the
first rows served (first writer wins across replicas), and scores every window that has enough
rows with the pure :func:`~pitstop.monitoring.drift.psi` and :func:`~pitstop.monitoring.drift.ks`
in a worker thread, on a copy of the window, so the event loop never waits for numpy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np

from pitstop.monitoring.attempt import Attempt
from pitstop.monitoring.drift import histogram, ks, psi
from pitstop.monitoring.profile import MAX_FEATURES, ReferenceProfile, profile_tensors

log = logging.getLogger(__name__)

ROWS_PER_REQUEST: Final = 8
"""Rows of one request that enter the window; a huge batch must not flush it in one go."""


class ReferenceStore(Protocol):
    """Where reference profiles live (the registry). Both methods block; they are called from
    worker threads."""

    def get(self, model: str, version: int) -> dict[str, Any] | None: ...

    def put_if_absent(self, model: str, version: int, profile: dict[str, Any]) -> bool:
        """Store ``profile`` unless the version has one; True when this one was stored."""
        ...


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    ks: float
    reference_mean: float
    live_mean: float


@dataclass(frozen=True)
class VersionDrift:
    model: str
    version: int
    reference: str
    """Where the reference came from (``file:<name>`` or ``requests``)."""
    reference_rows: int
    window_rows: int
    computed_at: float
    """Wall-clock seconds."""
    features: tuple[FeatureDrift, ...]
    """Worst (highest PSI) first."""

    @property
    def max_psi(self) -> float:
        return self.features[0].psi if self.features else 0.0

    def to_json(self, threshold: float) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "reference": self.reference,
            "reference_rows": self.reference_rows, "window_rows": self.window_rows,
            "computed_at": self.computed_at, "max_psi": self.max_psi,
            "features": [
                {"name": f.name, "psi": f.psi, "ks": f.ks, "drifted": f.psi >= threshold,
                 "reference_mean": f.reference_mean, "live_mean": f.live_mean}
                for f in self.features
            ],
        }  # fmt: skip


class Ring:
    """The newest ``capacity`` rows of one tensor, as float64 ``[capacity, width]``."""

    __slots__ = ("data", "filled", "position")

    def __init__(self, capacity: int, width: int) -> None:
        self.data = np.zeros((capacity, width), dtype=np.float64)
        self.position = 0
        self.filled = 0

    def add(self, rows: np.ndarray) -> None:
        capacity = self.data.shape[0]
        n = min(len(rows), capacity)
        end = self.position + n
        if end <= capacity:
            self.data[self.position : end] = rows[:n]
        else:
            split = capacity - self.position
            self.data[self.position :] = rows[:split]
            self.data[: n - split] = rows[split:n]
        self.position = end % capacity
        self.filled = min(capacity, self.filled + n)

    def rows(self) -> np.ndarray:
        """A copy of the rows held (order does not matter for a distribution)."""
        return self.data[: self.filled].copy()


@dataclass
class _Version:
    window_rows: int
    reference_rows: int
    rings: dict[str, Ring] = field(default_factory=dict)
    collected: dict[str, Ring] | None = field(default_factory=dict)
    """Rows for a reference built from traffic; None once the version has a reference."""
    reference: ReferenceProfile | None = None
    latest: VersionDrift | None = None

    def add(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name, array in inputs.items():
            if array.dtype.kind not in "biuf" or array.ndim not in (1, 2) or not len(array):
                continue
            rows = array[:ROWS_PER_REQUEST]
            if rows.ndim == 1:
                rows = rows[:, None]
            ring = self.rings.get(name)
            if ring is None:
                if len(self.rings) >= MAX_FEATURES or rows.shape[1] > MAX_FEATURES:
                    continue
                ring = self.rings[name] = Ring(self.window_rows, rows.shape[1])
            if ring.data.shape[1] != rows.shape[1]:
                continue  # a request of another width than the first: not the same feature
            ring.add(rows)
            collected = self.collected
            if collected is not None and self.reference_rows:
                buffer = collected.get(name)
                if buffer is None:
                    buffer = collected[name] = Ring(self.reference_rows, rows.shape[1])
                if buffer.filled < self.reference_rows:
                    buffer.add(rows[: self.reference_rows - buffer.filled])


class DriftMonitor:
    def __init__(
        self,
        store: ReferenceStore,
        *,
        window_rows: int = 2048,
        min_rows: int = 200,
        reference_rows: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._window_rows = window_rows
        self._min_rows = min_rows
        self._reference_rows = reference_rows
        self._clock = clock
        self._versions: dict[tuple[str, int], _Version] = {}

    def record(self, model: str, version: int, inputs: Mapping[str, np.ndarray]) -> None:
        """Add a request's inputs to the version's window. O(1), never raises for odd inputs."""
        state = self._versions.get((model, version))
        if state is None:
            state = self._versions[(model, version)] = _Version(
                self._window_rows, self._reference_rows
            )
        state.add(inputs)

    def observe_attempt(self, attempt: Attempt) -> None:
        """Every attempt whose inputs passed the signature check, served or not."""
        if attempt.inputs is not None and attempt.version is not None:
            self.record(attempt.model, attempt.version, attempt.inputs)

    def results(self, model: str | None = None) -> list[VersionDrift]:
        """The latest scores, per version (of ``model``), newest version first."""
        found = [
            state.latest
            for (name, _), state in self._versions.items()
            if state.latest is not None and (model is None or name == model)
        ]
        return sorted(found, key=lambda d: (d.model, -d.version))

    def status(self, model: str, version: int) -> str:
        """Why a version has no score yet (or ``scored``)."""
        state = self._versions.get((model, version))
        if state is None:
            return "no requests yet"
        if state.latest is not None:
            return "scored"
        if state.reference is None:
            return "no reference yet (push one with --reference, or wait for the first rows)"
        rows = max((ring.filled for ring in state.rings.values()), default=0)
        return f"window has {rows} of the {self._min_rows} rows needed"

    def versions(self, model: str) -> list[int]:
        return sorted((v for m, v in self._versions if m == model), reverse=True)

    def forget(self, keep: set[tuple[str, int]]) -> None:
        """Drop the windows of versions not in ``keep`` (unloaded for good)."""
        for key in [key for key in self._versions if key not in keep]:
            del self._versions[key]

    async def tick(self) -> None:
        """Load or build references, then score every window with enough rows."""
        for (model, version), state in list(self._versions.items()):
            try:
                await self._reference_for(model, version, state)
                if state.reference is None:
                    continue
                windows = {name: ring.rows() for name, ring in state.rings.items()}
                rows = max((len(w) for w in windows.values()), default=0)
                if rows < self._min_rows:
                    continue
                features = await asyncio.to_thread(score, state.reference, windows)
                state.latest = VersionDrift(
                    model, version, state.reference.source, state.reference.rows, rows,
                    self._clock(), features,
                )  # fmt: skip
            except Exception:
                log.exception("drift scoring of %s v%d failed", model, version)

    async def _reference_for(self, model: str, version: int, state: _Version) -> None:
        if state.reference is not None:
            return
        # Looked up every tick until found: a reference may be pushed at any time.
        stored = await asyncio.to_thread(self._store.get, model, version)
        if stored is not None:
            self._use(state, stored)
            return
        collected = state.collected
        if collected and all(r.filled >= self._reference_rows for r in collected.values()):
            tensors = {name: ring.rows() for name, ring in collected.items()}
            profile = await asyncio.to_thread(profile_tensors, tensors, "requests")
            body = profile.to_json()
            if not await asyncio.to_thread(self._store.put_if_absent, model, version, body):
                winner = await asyncio.to_thread(self._store.get, model, version)
                body = winner if winner is not None else body
            self._use(state, body)

    @staticmethod
    def _use(state: _Version, body: Mapping[str, Any]) -> None:
        state.reference = ReferenceProfile.from_json(body)
        state.collected = None


def score(
    reference: ReferenceProfile, windows: Mapping[str, np.ndarray]
) -> tuple[FeatureDrift, ...]:
    """Drift of each reference feature present in ``windows`` (tensor → ``[rows, width]``),
    worst PSI first. Pure."""
    found: list[FeatureDrift] = []
    for feature in reference.features:
        window = windows.get(feature.tensor)
        if window is None or feature.column >= window.shape[1]:
            continue
        values = window[:, feature.column]
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        edges = np.asarray(feature.edges, dtype=np.float64)
        found.append(
            FeatureDrift(
                name=feature.name,
                psi=psi(feature.counts, histogram(values, edges)),
                ks=ks(feature.sample, values),
                reference_mean=feature.mean,
                live_mean=float(values.mean()),
            )
        )
    return tuple(sorted(found, key=lambda f: f.psi, reverse=True))
