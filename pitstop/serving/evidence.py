"""What the rollout judge sees: every live replica's observations of a step, merged.

Each replica summarises its own rollout windows (:class:`Summary`: request and error counts, a
latency histogram on fixed edges, the newest :data:`MAX_PREDICTIONS` predictions) for every
running rollout — the canary since its step began, the baseline since the rollout began — and
publishes them to the registry about once a second (:func:`publish`). The controller asks an
:class:`Evidence` for a rollout's windows: :class:`SharedEvidence` merges the rows of every live
replica (heartbeat within the replica timeout) for the current step. If a live replica's rows
are missing or stale the evidence is incomplete and the judge is not asked (HOLD, as Argo
Rollouts treats missing metrics: inconclusive, never a pass); a replica that died stops being
live after the timeout and its traffic is judged no more. :class:`LocalEvidence` judges this
process's observations alone (one server, and the controller's unit tests).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, Protocol

from pitstop.errors import RegistryUnavailable
from pitstop.registry import Registry, Rollout, RolloutState
from pitstop.serving.rollout import ArmWindow
from pitstop.serving.window import Windows

log = logging.getLogger(__name__)

EDGES_MS: Final = tuple(round(0.05 * 1.25**i, 6) for i in range(72))
"""Upper edges of the latency buckets: 0.05 ms to ~470 s, 25% apart (a merged p99 is within a
quarter of the exact one); the last bucket catches everything above."""

MAX_PREDICTIONS: Final = 2_000
"""Predictions each replica publishes per arm: enough for the divergence check's PSI."""

STALE_AFTER: Final = 3
"""A published window older than this many publish intervals is stale."""


@dataclass(frozen=True)
class Summary:
    """One replica's observations of one arm since a moment."""

    requests: int
    errors: int
    latency_counts: tuple[int, ...]
    """Successful requests per bucket of :data:`EDGES_MS` (plus one above the last edge)."""
    predictions: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_counts": list(self.latency_counts),
            "predictions": list(self.predictions),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Summary:
        return cls(
            int(body["requests"]),
            int(body["errors"]),
            tuple(int(n) for n in body["latency_counts"]),
            tuple(float(v) for v in body["predictions"]),
        )


def summarise(windows: Windows, model: str, version: int, since: float) -> Summary:
    """What this process observed of ``model`` ``version`` since ``since`` (wall clock)."""
    recorder = windows.arm(model, version)
    counts = [0] * (len(EDGES_MS) + 1)
    requests = errors = 0
    for at, latency_ms, ok in list(recorder.requests):
        if at < since:
            continue
        requests += 1
        if ok:
            counts[bisect.bisect_left(EDGES_MS, latency_ms)] += 1
        else:
            errors += 1
    values = [value for at, value in list(recorder.predictions) if at >= since]
    return Summary(requests, errors, tuple(counts), tuple(values[-MAX_PREDICTIONS:]))


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


class LocalEvidence:
    """This process's observations only."""

    def __init__(self, windows: Windows) -> None:
        self._windows = windows

    def gather(self, rollout: Rollout) -> tuple[ArmWindow, ArmWindow] | str:
        since = rollout.step_started_at.timestamp()
        canary = self._windows.window(rollout.model, rollout.version, since)
        baseline = self._windows.window(
            rollout.model, rollout.baseline, rollout.started_at.timestamp()
        )
        return canary, baseline


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
        return merge(canary), merge(baseline)


def windows_of(
    windows: Windows, rollouts: Sequence[Rollout]
) -> list[tuple[int, int, int, dict[str, Any]]]:
    """This process's rows for the running ``rollouts``: canary and baseline of each."""
    rows = []
    for rollout in rollouts:
        if rollout.state is not RolloutState.RUNNING:
            continue
        canary = summarise(
            windows, rollout.model, rollout.version, rollout.step_started_at.timestamp()
        )
        baseline = summarise(
            windows, rollout.model, rollout.baseline, rollout.started_at.timestamp()
        )
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
