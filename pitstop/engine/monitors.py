"""The monitoring parts one Engine runs, built from Settings, and their background loops.

Most parts observe the DataPlane's attempts (:meth:`Observability.observers` is the list the
Engine hands it). Each optional part is None when its setting turns it off (metrics, drift,
tracing, request logs, cost); rollout windows and embedding behaviour are always kept;
the loops (drift scoring every ``drift_interval_s``, cost snapshots every :data:`COST_TICK_S`)
are started and cancelled by the :class:`~pitstop.engine.Engine`. Their HTTP routes live in
``transports/observability.py``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from pitstop import errors
from pitstop.monitoring.access import AccessRecorder
from pitstop.monitoring.attempt import Observer
from pitstop.monitoring.behaviour import BehaviourRecorder
from pitstop.monitoring.cost import CostReport, CostTracker, Usage
from pitstop.monitoring.drift_monitor import DriftMonitor
from pitstop.monitoring.inventory import Inventory, forget, publish, summed
from pitstop.monitoring.live import TICK_S, LiveSeries
from pitstop.monitoring.logs import RequestLog
from pitstop.monitoring.requests import RequestRecorder
from pitstop.monitoring.streams import StreamRecorder
from pitstop.monitoring.tally import FileTally, Tally, file_name, gather
from pitstop.monitoring.tracing import Tracing
from pitstop.registry import Registry
from pitstop.serving.window import Windows
from pitstop.settings import Settings

COST_TICK_S: Final = 15.0
"""Granularity of cost windows."""
SHARE_S: Final = 1.0
"""How often a worker publishes its in-flight and queue gauges for the others' scrapes."""


class RegistryReferences:
    """The drift monitor's :class:`~pitstop.monitoring.drift_monitor.ReferenceStore`, on the
    registry; references built from traffic are recorded under this replica's name."""

    def __init__(self, registry: Registry, replica: str) -> None:
        self._registry = registry
        self._replica = replica

    def get(self, model: str, version: int) -> dict[str, Any] | None:
        stored = self._registry.references.get(model, version)
        return stored.profile if stored is not None else None

    def put_if_absent(self, model: str, version: int, profile: dict[str, Any]) -> bool:
        return self._registry.references.put(
            model, version, profile, source=str(profile.get("source", "requests")),
            actor=f"server:{self._replica}", replace=False,
        )  # fmt: skip


@dataclass
class Observability:
    """Every monitoring part one server runs; each is None when its setting turns it off."""

    settings: Settings
    requests: RequestRecorder | None
    drift: DriftMonitor | None
    tracing: Tracing | None
    request_log: RequestLog | None
    cost: CostTracker | None
    windows: Windows
    """Recent outcomes of policy-routed attempts per version, for the rollout controller."""
    behaviour: BehaviourRecorder
    """Embedding norms and cosine to the reference centroid per version."""
    tally: Tally
    """Where request counters live (statistics, metrics): this process's memory, or the
    worker's file when the server runs several workers."""
    everyone: Callable[[], Tally] | None
    """Every worker's counters summed (None when this process is the only one)."""
    streams: StreamRecorder
    """What the stream consumers hosted over this Engine did (pitstop/stream)."""
    access: AccessRecorder
    """Calls the hosts' security gate denied."""
    live: LiveSeries = field(init=False)
    """The last hour of request rate, errors and latency per model (the console's charts)."""

    def __post_init__(self) -> None:
        self.live = LiveSeries(self.requests_everywhere)

    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: Registry,
        replica: str,
        tracing: Tracing | None = None,
    ) -> Observability:
        """``tracing`` replaces the one the settings describe."""
        tally: Tally = Tally()
        everyone: Callable[[], Tally] | None = None
        if settings.worker_dir is not None:
            folder = settings.worker_dir
            tally = FileTally(folder, file_name(os.getpid()))
            everyone = partial(gather, folder)
        requests = RequestRecorder(tally) if settings.metrics_enabled else None
        drift = None
        if settings.drift_enabled:
            drift = DriftMonitor(
                RegistryReferences(registry, replica),
                window_rows=settings.drift_window_rows,
                min_rows=settings.drift_min_rows,
                reference_rows=settings.drift_reference_rows,
            )
        if tracing is None:
            tracing = Tracing.from_settings(
                settings.tracing_exporter, settings.tracing_endpoint, settings.tracing_sample_ratio
            )
        request_log = None
        if settings.log_requests:
            request_log = RequestLog(
                settings.log_payload_sample_rate, settings.log_redact,
                trace_id=None if tracing is None else tracing.current_trace_id,
            )  # fmt: skip
        cost = None
        if settings.cost_per_hour > 0 and requests is not None:
            cost = CostTracker(settings.cost_per_hour, settings.replicas)
        return cls(
            settings, requests, drift, tracing, request_log, cost, Windows(), BehaviourRecorder(),
            tally, everyone, StreamRecorder(tally), AccessRecorder(tally),
        )  # fmt: skip

    def observers(self) -> list[Observer]:
        """What sees every attempt the DataPlane makes, after its own statistics."""
        parts: list[Observer | None] = [
            self.requests, self.windows, self.behaviour, self.drift, self.request_log,
            self.tracing,
        ]  # fmt: skip
        return [part for part in parts if part is not None]

    def requests_everywhere(self) -> RequestRecorder | None:
        """The request series of every worker of this server (this process's when alone)."""
        if self.requests is None or self.everyone is None:
            return self.requests
        return RequestRecorder.over(self.everyone())

    def streams_everywhere(self) -> StreamRecorder:
        """The stream series of every worker of this server (this process's when alone)."""
        if self.everyone is None:
            return self.streams
        return StreamRecorder.over(self.everyone(), lag_from=self.streams)

    def access_everywhere(self) -> AccessRecorder:
        """The denial counts of every worker of this server (this process's when alone)."""
        if self.everyone is None:
            return self.access
        return AccessRecorder(self.everyone())

    def usage(self) -> dict[tuple[str, int], Usage]:
        requests = self.requests_everywhere()
        if requests is None:
            return {}
        return {
            (s.model, s.version): Usage(s.rows, s.compute.total)
            for s in requests
            if s.version is not None
        }

    def cost_report(self, window_s: float | None = None) -> CostReport:
        if self.cost is None:
            raise errors.NotFound("cost is off: set PITSTOP_COST_PER_HOUR (metrics must be on)")
        return self.cost.report(self.usage(), window_s or self.settings.cost_window_s)

    def loops(
        self, inventory: Callable[[], Inventory]
    ) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The background loops to run (each until cancelled); ``inventory`` says what the
        process holds now (drift forgets versions it no longer does)."""
        found: list[Callable[[], Coroutine[Any, Any, None]]] = []
        drift, cost = self.drift, self.cost
        if drift is not None:

            async def score() -> None:
                while True:
                    await asyncio.sleep(self.settings.drift_interval_s)
                    held = {(v.model, v.version) for v in inventory().versions}
                    drift.forget(held)
                    await drift.tick()

            found.append(score)
        if cost is not None:

            async def snapshot() -> None:
                while True:
                    await asyncio.sleep(COST_TICK_S)
                    cost.tick(self.usage())

            found.append(snapshot)
        if self.requests is not None:
            live = self.live

            async def sample() -> None:
                live.tick()
                while True:
                    await asyncio.sleep(TICK_S)
                    live.tick()

            found.append(sample)
        if self.everyone is not None:

            async def share() -> None:
                while True:
                    await asyncio.sleep(SHARE_S)
                    self.share(inventory())

            found.append(share)
        return found

    def share(self, own: Inventory) -> None:
        """Publish this worker's inventory numbers for the other workers' scrapes."""
        publish(own, self.tally)
        forget(self.tally, {(v.model, v.version) for v in own.versions})

    def inventory_everywhere(self, own: Inventory) -> Inventory:
        """``own`` with every worker's gauges and counters (``own`` when this is the only
        process)."""
        if self.everyone is None:
            return own
        self.share(own)
        return summed(own, self.everyone())
