"""What the rollout judge sees: every live replica's observations of a step, merged.

Each replica summarises its own rollout windows (:class:`~pitstop.serving.window.Summary`:
request and error counts, a latency histogram on fixed edges, the newest predictions) for every
running rollout — the canary since its step began, the baseline since the rollout began — and
publishes them to the registry about once a second (:func:`publish`). The controller asks an
:class:`Evidence` for a rollout's windows: :class:`SharedEvidence` merges the rows of every live
replica (heartbeat within the replica timeout) for the current step. If a live replica's rows
are missing or stale the evidence is incomplete and the judge is not asked (HOLD, as Argo
Rollouts treats missing metrics: inconclusive, never a pass); a replica that died stops being
live after the timeout and its traffic is judged no more. One server alone is a registry with
one live replica: the same path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Final, Protocol

from pitstop.errors import RegistryUnavailable
from pitstop.monitoring.outcome import Metric
from pitstop.registry import Registry, Rollout, RolloutState
from pitstop.serving.outcome_report import tally_over
from pitstop.serving.rollout import ArmWindow
from pitstop.serving.window import EDGES_MS, Summary, Windows

log = logging.getLogger(__name__)

STALE_AFTER: Final = 3
"""A published window older than this many publish intervals is stale."""


def merge(summaries: Iterable[Summary]) -> ArmWindow:
    """One window from several replicas' summaries; p99 is the upper edge of the bucket
    holding the 99th percentile of the successful requests."""
    summaries = list(summaries)
    counts = [sum(column) for column in zip(*(s.latency_counts for s in summaries), strict=True)]
    total = sum(counts)
    p99 = 0.0
    if total:
        rank, seen = 0.99 * total, 0
        for index, count in enumerate(counts):
            seen += count
            if seen >= rank:
                p99 = EDGES_MS[index] if index < len(EDGES_MS) else EDGES_MS[-1] * 1.25
                break
    return ArmWindow(
        requests=sum(s.requests for s in summaries),
        errors=sum(s.errors for s in summaries),
        p99_ms=p99,
        predictions=[value for s in summaries for value in s.predictions],
    )


class Evidence(Protocol):
    """Where the controller's windows come from."""

    def gather(self, rollout: Rollout) -> tuple[ArmWindow, ArmWindow] | str:
        """(canary since the step began, baseline since the rollout began), or why the
        evidence is incomplete (the controller then holds). Blocking; called in a thread."""
        ...


class SharedEvidence:
    """Every live replica's published observations, merged."""

    def __init__(self, registry: Registry, replica_timeout_s: float, publish_s: float) -> None:
        self._registry = registry
        self._timeout_s = replica_timeout_s
        self._stale = timedelta(seconds=publish_s * STALE_AFTER)

    def gather(self, rollout: Rollout) -> tuple[ArmWindow, ArmWindow] | str:
        live = [r.name for r in self._registry.replicas.live(self._timeout_s)]
        if not live:
            return "no live replica has reported yet"
        rows = self._registry.step_windows.of(rollout.id)
        newest = max((row.updated_at for row in rows), default=None)
        canary: list[Summary] = []
        baseline: list[Summary] = []
        missing = []
        for name in live:
            mine = {row.version: row for row in rows if row.replica == name}
            arm, base = mine.get(rollout.version), mine.get(rollout.baseline)
            fresh = (
                arm is not None and base is not None and arm.step == rollout.step
                and newest is not None and newest - arm.updated_at <= self._stale
            )  # fmt: skip
            if not fresh or arm is None or base is None:
                missing.append(name)
                continue
            canary.append(Summary.from_json(arm.summary))
            baseline.append(Summary.from_json(base.summary))
        if missing:
            return f"waiting for the step's windows of {', '.join(sorted(missing))}"
        merged = merge(canary), merge(baseline)
        metric = rollout.guard.outcome_metric
        if not metric:
            return merged
        found = self._registry.outcomes.sums(
            rollout.model, since=rollout.started_at, versions=(rollout.version, rollout.baseline)
        )
        kind = Metric(metric)
        return (
            replace(
                merged[0],
                outcome=tally_over(kind, (r for r in found if r.version == rollout.version)),
            ),
            replace(
                merged[1],
                outcome=tally_over(kind, (r for r in found if r.version == rollout.baseline)),
            ),
        )


def windows_of(
    windows: Windows, rollouts: Sequence[Rollout]
) -> list[tuple[int, int, int, dict[str, Any]]]:
    """This process's rows for the running ``rollouts``: canary and baseline of each."""
    rows = []
    for rollout in rollouts:
        if rollout.state is not RolloutState.RUNNING:
            continue
        canary = windows.summary(rollout.model, rollout.version, rollout.step_started_at)
        baseline = windows.summary(rollout.model, rollout.baseline, rollout.started_at)
        rows.append((rollout.id, rollout.version, rollout.step, canary.to_json()))
        rows.append((rollout.id, rollout.baseline, rollout.step, baseline.to_json()))
    return rows


async def publish(registry: Registry, windows: Windows, replica: str, interval_s: float) -> None:
    """Publish this process's windows of the running rollouts every ``interval_s`` until
    cancelled (writing nothing while there is none, after clearing what it wrote last).
    Never fatal."""
    wrote = True  # at start: clear what a previous process of this name may have left
    while True:
        try:
            active = await asyncio.to_thread(registry.delivery.rollouts, None, active_only=True)
            rows = windows_of(windows, active)
            if rows or wrote:
                await asyncio.to_thread(
                    registry.step_windows.publish, replica, rows, [r.id for r in active]
                )
            wrote = bool(rows)
        except RegistryUnavailable:
            pass  # the watch loop reports it
        except Exception:
            log.exception("publishing rollout windows failed")
        await asyncio.sleep(interval_s)
