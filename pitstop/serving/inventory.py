"""The serving state as :class:`~pitstop.monitoring.inventory.Inventory`, for ``/metrics``.

Built on the event loop at scrape time from the manager's versions and policies and the
DataPlane's shadow, fallback and behaviour counters: O(versions), no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

from pitstop.monitoring.behaviour import BehaviourRecorder
from pitstop.monitoring.inventory import Inventory, Residency, VersionView
from pitstop.serving.manager import ModelManager
from pitstop.serving.shadow import ShadowRunner
from pitstop.serving.version_policy import VersionState


def build_inventory(
    manager: ModelManager,
    shadows: ShadowRunner,
    fallbacks: Mapping[tuple[str, str], int],
    behaviour: BehaviourRecorder,
) -> Inventory:
    views = []
    models: set[str] = set()
    for loaded in manager.loaded_versions():
        record = loaded.record
        models.add(record.model)
        execution = loaded.execution
        views.append(
            VersionView(
                model=record.model,
                version=record.number,
                digest=record.digest,
                runtime=record.runtime,
                state=loaded.state.value,
                inflight=loaded.inflight,
                queued=execution.queued if execution is not None else 0,
                load_seconds=loaded.load_seconds,
                deterministic=loaded.deterministic,
                memory_bytes=loaded.memory_bytes if loaded.state is VersionState.READY else None,
                on_demand=loaded.on_demand,
                worker_restarts=getattr(loaded.runtime, "restarts", None),
                worker_failure=getattr(loaded.runtime, "last_failure", None),
                behaviour=behaviour.snapshot(record.model, record.number),
            )
        )
    weights = tuple(
        (model, arm.target, arm.weight)
        for model in sorted(models)
        for arm in manager.policy(model).arms
    )
    return Inventory(
        versions=tuple(views),
        weights=weights,
        fallbacks=dict(fallbacks),
        shadow_dropped=dict(shadows.dropped),
        shadow_requests={
            key: (comparison.requests, comparison.failures)
            for key, comparison in shadows.comparisons.items()
        },
        load_failures=dict(manager.load_failures),
        residency=Residency(
            budget=manager.memory_budget,
            cold_starts=dict(manager.cold_starts),
            evictions=dict(manager.evictions),
            refusals=dict(manager.refusals),
            cold_start_seconds=dict(manager.cold_start_seconds),
        ),
        registry_up=manager.contact.reachable,
        registry_failures=manager.contact.failures,
    )
