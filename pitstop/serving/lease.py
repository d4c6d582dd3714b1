"""A loaded version and the lease a request holds on it.

A lease keeps a version from being unloaded while a request uses it: the manager drains a version
by waiting for ``idle``, which is set whenever no lease is held. Leases are taken and released on
the event loop only, so the counter needs no lock.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType

from pitstop.registry import VersionRecord
from pitstop.runtimes.base import Runtime, RuntimeMetadata
from pitstop.serving.cache import ResponseCache
from pitstop.serving.execution import Execution
from pitstop.serving.version_policy import VersionKey, VersionState


@dataclass
class LoadedVersion:
    """One version's life on this server. Mutated only on the event loop."""

    record: VersionRecord
    state: VersionState
    since: datetime
    runtime: Runtime | None = None
    metadata: RuntimeMetadata | None = None
    error: str | None = None
    """Why it FAILED, or a note about a READY version (e.g. non-deterministic)."""
    deterministic: bool = True
    execution: Execution | None = None
    """How requests run: directly in the thread pool or through a batcher. Set when READY."""
    cache: ResponseCache | None = None
    """The version's response cache, when its manifest enables one and it is deterministic."""
    inflight: int = 0
    load_seconds: float | None = None
    """How long the load that made it READY took (fetch, verify, load, warm-up, retries)."""
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    last_used: float = field(default_factory=time.monotonic)
    """When a request last took a lease on it (monotonic seconds): what LRU eviction reads."""
    on_demand: bool = False
    """Loaded because a request named it, not because an ``always`` alias targets it: the
    memory budget may evict it."""
    memory_bytes: int | None = None
    """Measured when it became READY (see :func:`pitstop.serving.loader.memory_of`)."""
    waiters: int = 0
    """Requests waiting for it to finish loading on demand."""

    key: VersionKey = field(init=False)
    """(model, version), computed once: it is read on every request."""

    def __post_init__(self) -> None:
        self.key = VersionKey(self.record.model, self.record.number)


class Lease:
    """Keeps a READY version from being unloaded while a request uses it."""

    __slots__ = ("version",)

    def __init__(self, version: LoadedVersion) -> None:
        self.version = version

    def __enter__(self) -> LoadedVersion:
        self.version.last_used = time.monotonic()
        self.version.inflight += 1
        self.version.idle.clear()
        return self.version

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.version.inflight -= 1
        if self.version.inflight == 0:
            self.version.idle.set()
