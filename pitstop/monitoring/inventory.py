r"""What a server holds, as plain data: read at scrape time by :mod:`pitstop.monitoring.metrics`.

The serving layer builds an :class:`Inventory` from its own state (versions and their states,
traffic weights, shadow and fallback counters) whenever metrics are scraped; monitoring never
reaches into serving objects. With several workers, each :func:`publish`\ es its numbers into
its tally cells (the gauges as LIVE cells, the counters as their running totals), and the
worker answering a scrape reports :func:`summed` over every worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pitstop.monitoring.histogram import Histogram
from pitstop.monitoring.tally import Key, Kind, Tally


@dataclass(frozen=True)
class VersionView:
    model: str
    version: int
    digest: str
    runtime: str
    state: str
    """LOADING, READY, DRAINING, UNLOADED or FAILED."""
    inflight: int
    """Requests holding the version (queued or running)."""
    queued: int
    """Requests waiting in its queue (batcher or direct execution)."""
    load_seconds: float | None
    """How long its last load (fetch, verify, load, warm-up) took, once READY."""
    deterministic: bool = True
    """False when two warm-up runs of one example differed (never response-cached)."""
    memory_bytes: int | None = None
    """Memory the version holds, measured when it loaded (its worker's RSS when isolated)."""
    on_demand: bool = False
    """Loaded because a request named it; the memory budget may evict it."""
    worker_restarts: int | None = None
    """Restarts of its isolated worker process (None: it runs in the server process)."""
    worker_failure: str | None = None
    """Why its worker last died or was replaced, and when."""
    behaviour: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Embedding output → running norm / cosine-to-centroid statistics (``to_json`` shape of
    :class:`pitstop.monitoring.behaviour.EmbeddingBehaviour`)."""


@dataclass(frozen=True)
class Residency:
    """What loading on demand and the memory budget did (this process's numbers)."""

    budget: int | None = None
    """Bytes (PITSTOP_MEMORY_BUDGET), None without a budget."""
    cold_starts: Mapping[str, int] = field(default_factory=dict)
    evictions: Mapping[str, int] = field(default_factory=dict)
    refusals: Mapping[str, int] = field(default_factory=dict)
    cold_start_seconds: Mapping[str, Histogram] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    versions: tuple[VersionView, ...] = ()
    weights: tuple[tuple[str, str, float], ...] = ()
    """(model, target, percent) of each model's traffic policy arm."""
    fallbacks: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(model, reason) → requests the fallback answered."""
    shadow_dropped: Mapping[str, int] = field(default_factory=dict)
    shadow_requests: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(model, target) → (copies sent, copies failed)."""
    load_failures: Mapping[str, int] = field(default_factory=dict)
    registry_up: bool = True
    """Whether the last registry read succeeded."""
    registry_failures: int = 0
    """Registry reads that failed since the server started."""
    residency: Residency = field(default_factory=Residency)
    """Model → failed loads (after retries) since start."""


def publish(inventory: Inventory, tally: Tally) -> None:
    """Write this worker's numbers into its cells (set, not added: each cell holds this
    worker's current value), for :func:`summed` in any worker."""
    for view in inventory.versions:
        tally.cells(("inventory", view.model, view.version), 2, Kind.LIVE)[:] = (
            view.inflight, view.queued,
        )  # fmt: skip
    for (model, reason), count in inventory.fallbacks.items():
        tally.cells(("inventory", "fallbacks", model, reason))[0] = count
    for model, count in inventory.shadow_dropped.items():
        tally.cells(("inventory", "shadow_dropped", model))[0] = count
    for (model, target), (sent, failed) in inventory.shadow_requests.items():
        tally.cells(("inventory", "shadow", model, target), 2)[:] = (sent, failed)
    for model, count in inventory.load_failures.items():
        tally.cells(("inventory", "load_failures", model))[0] = count
    tally.cells(("inventory", "registry_failures"))[0] = inventory.registry_failures


def forget(tally: Tally, held: set[tuple[str, int]]) -> None:
    """Zero the gauges of versions this worker no longer holds."""
    for key in tally:
        version = key[2] if len(key) == 3 and key[0] == "inventory" else None
        if isinstance(version, int) and (key[1], version) not in held:
            tally.cells(key, 2, Kind.LIVE)[:] = 0


def summed(inventory: Inventory, everyone: Tally) -> Inventory:
    """``inventory`` (this worker's states, weights, behaviour) with the numbers of every
    worker: gauges summed over the live ones, counters over all."""
    present = set(everyone)
    views = []
    for view in inventory.versions:
        gauge: Key = ("inventory", view.model, view.version)
        if gauge in present:
            cells = everyone.cells(gauge, 2, Kind.LIVE)
            view = replace(view, inflight=int(cells[0]), queued=int(cells[1]))
        views.append(view)
    versions = tuple(views)
    fallbacks: dict[tuple[str, str], int] = {}
    dropped: dict[str, int] = {}
    shadows: dict[tuple[str, str], tuple[int, int]] = {}
    failures: dict[str, int] = {}
    registry_failures = inventory.registry_failures
    for key in everyone:
        if len(key) < 2 or key[0] != "inventory" or not all(isinstance(k, str) for k in key[2:]):
            continue
        part, names = key[1], [str(k) for k in key[2:]]
        if part == "fallbacks" and len(names) == 2:
            fallbacks[(names[0], names[1])] = int(everyone.cells(key)[0])
        elif part == "shadow_dropped" and len(names) == 1:
            dropped[names[0]] = int(everyone.cells(key)[0])
        elif part == "shadow" and len(names) == 2:
            sent, failed = everyone.cells(key, 2).tolist()
            shadows[(names[0], names[1])] = (int(sent), int(failed))
        elif part == "load_failures" and len(names) == 1:
            failures[names[0]] = int(everyone.cells(key)[0])
        elif part == "registry_failures" and not names:
            registry_failures = int(everyone.cells(key)[0])
    return replace(
        inventory, versions=versions, fallbacks=fallbacks, shadow_dropped=dropped,
        shadow_requests=shadows, load_failures=failures, registry_failures=registry_failures,
    )  # fmt: skip
