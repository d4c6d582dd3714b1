"""What each alias serves right now, per replica: a pure join of the catalog, the states the
servers reported and the alias history (``pitstop status``, the console's overview)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pitstop.registry.audit import AuditEvent
from pitstop.registry.records import ModelRecord
from pitstop.registry.serving_state import ServingState


@dataclass(frozen=True)
class StatusRow:
    model: str
    alias: str
    target: int
    """The version the alias points at."""
    serving: int | None
    """The version answering for the alias: the target once READY, else the newest earlier
    target that still is (a server keeps the old route until the new version is READY)."""
    digest: str | None
    state: str
    """The target's state on the replica (``NOT LOADED`` when it never reported one)."""
    since: datetime | None
    error: str | None
    """Why the target FAILED, when it did."""
    replica: str | None


def previous_targets(events: Sequence[AuditEvent], model: str, alias: str) -> list[int]:
    """Versions ``alias`` of ``model`` pointed at before, newest first (``events`` newest
    first)."""
    targets = []
    for event in events:
        if (
            event.model == model
            and event.action == "alias.set"
            and event.alias == alias
            and event.before
        ):
            number = event.before.get("version")
            if isinstance(number, int):
                targets.append(number)
    return targets


def status_rows(
    models: Sequence[ModelRecord],
    states: Sequence[ServingState],
    events: Sequence[AuditEvent],
) -> list[StatusRow]:
    """One row per (model, alias, replica that reported on the model), models in the given
    order; a model no replica reported on gets rows with ``replica`` None."""
    by_model: dict[str, list[ServingState]] = {}
    for state in states:
        by_model.setdefault(state.model, []).append(state)
    alias_events: dict[str, list[AuditEvent]] = {}
    for event in events:
        if event.action == "alias.set":
            alias_events.setdefault(event.model, []).append(event)
    rows: list[StatusRow] = []
    for record in models:
        model_states = by_model.get(record.name, [])
        replicas: list[str | None] = [*sorted({s.replica for s in model_states})] or [None]
        for alias_name, target in sorted(record.aliases.items()):
            previous = previous_targets(alias_events.get(record.name, []), record.name, alias_name)
            for replica in replicas:
                by_version = {s.version: s for s in model_states if s.replica == replica}
                mine = by_version.get(target)
                serving = next(
                    (
                        v
                        for v in [target, *previous]
                        if v in by_version and by_version[v].state == "READY"
                    ),
                    None,
                )
                shown = by_version.get(serving) if serving is not None else mine
                rows.append(
                    StatusRow(
                        model=record.name,
                        alias=alias_name,
                        target=target,
                        serving=serving,
                        digest=shown.digest if shown else None,
                        state=mine.state if mine else "NOT LOADED",
                        since=shown.since if shown else None,
                        error=mine.error if mine else None,
                        replica=replica,
                    )
                )
    return rows
