"""What a server holds, as plain data: read at scrape time by :mod:`pitstop.monitoring.metrics`.

The serving layer builds an :class:`Inventory` from its own state (versions and their states,
traffic weights, shadow and fallback counters) whenever metrics are scraped; monitoring never
reaches into serving objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
    behaviour: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Embedding output → running norm / cosine-to-centroid statistics (``to_json`` shape of
    :class:`pitstop.monitoring.behaviour.EmbeddingBehaviour`)."""


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
    """Model → failed loads (after retries) since start."""
