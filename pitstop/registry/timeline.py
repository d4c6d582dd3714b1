"""What served when: replaying a model's audit history into shares of traffic per version.

Pure over :class:`~pitstop.registry.audit.AuditEvent` lists. Each alias, policy or rollout event
yields a :class:`TimelineEntry` with the traffic split in force right after it, so "what served
yesterday at 14:00?" is the last entry at or before that time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pitstop.protocol.reference import natural
from pitstop.registry.audit import AuditEvent
from pitstop.registry.policy import TrafficPolicy

RELEVANT = ("alias.", "policy.", "rollout.")


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    shares: dict[int, float]
    """Version → percent of the default (unversioned) traffic it answered from ``at`` on."""
    shadows: dict[int, float]
    """Version → fraction of requests copied to it as shadow traffic."""
    aliases: dict[str, int]
    event: AuditEvent


def _resolve(target: str, aliases: dict[str, int]) -> int | None:
    number = natural(target)
    return aliases.get(target) if number is None else number


def replay(events: Sequence[AuditEvent]) -> list[TimelineEntry]:
    """Entries oldest first, from events in any order (they are sorted by id)."""
    aliases: dict[str, int] = {}
    policy = TrafficPolicy()
    entries: list[TimelineEntry] = []
    for event in sorted(events, key=lambda e: e.id):
        if event.action == "alias.set" and event.alias and event.after:
            aliases[event.alias] = int(event.after["version"])
        elif event.action == "alias.delete" and event.alias:
            aliases.pop(event.alias, None)
        elif event.action == "policy.set":
            policy = TrafficPolicy.from_json(event.after)
        if not event.action.startswith(RELEVANT):
            continue
        shares: dict[int, float] = {}
        for arm in policy.arms:
            version = _resolve(arm.target, aliases)
            if version is not None and arm.weight > 0:
                shares[version] = shares.get(version, 0.0) + arm.weight
        shadows = {
            version: shadow.rate
            for shadow in policy.shadows
            if (version := _resolve(shadow.target, aliases)) is not None
        }
        entries.append(TimelineEntry(event.at, shares, shadows, dict(aliases), event))
    return entries


def served_at(entries: Sequence[TimelineEntry], at: datetime) -> TimelineEntry | None:
    """The entry in force at ``at`` (the last one at or before it), or None before any."""
    found = None
    for entry in entries:
        if entry.at <= at:
            found = entry
        else:
            break
    return found
