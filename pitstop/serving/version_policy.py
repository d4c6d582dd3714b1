"""The availability-preserving version policy: a pure function from a snapshot to a plan.

Vocabulary:
- a *target* is what the registry wants: alias ``(model, alias)`` → version number;
- a *route* is what the server serves: alias → a version that is READY right now;
- a version's *state* is one of :class:`VersionState`.

``plan()`` never lets an alias lose its route while its new target is still loading or has failed:
the old version keeps serving until the new one is READY (load next to the old; switch; drain;
unload). Versions nobody routes to or targets are drained and unloaded.

Models whose load policy is ``on-demand`` (*lazy*) load nothing at start: a version of theirs
loads when a request *demands* it, and once READY it stays *resident* (routed if an alias
targets it) until the memory budget evicts it (:mod:`pitstop.serving.residency`). A version of
any model that no alias targets can be demanded the same way; ``always`` models keep today's
rule for their aliases' targets.

Models listed as *resource-preserving* (too big to hold twice) swap the other way round: the
outgoing version loses its route and is drained and unloaded first, and only then does the new
target load. The alias answers 503 in between; that is the price of never holding two copies.

    LOADING ──► READY ──► DRAINING ──► UNLOADED
       │          │           │
       └──────────┴───────────┴──► FAILED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class VersionState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    DRAINING = "DRAINING"
    UNLOADED = "UNLOADED"
    FAILED = "FAILED"


@dataclass(frozen=True, order=True)
class VersionKey:
    model: str
    version: int

    def __str__(self) -> str:
        return f"{self.model} v{self.version}"


@dataclass(frozen=True, order=True)
class AliasKey:
    model: str
    alias: str


@dataclass(frozen=True)
class Plan:
    """What the manager should do next. Applying it is idempotent."""

    load: tuple[VersionKey, ...]
    """Targets (and demanded versions) with no live state: start loading them (next to
    whatever serves now)."""
    routes: Mapping[AliasKey, VersionKey]
    """The alias table to publish now. Only READY versions appear in it."""
    unload: tuple[VersionKey, ...]
    """READY versions neither routed nor targeted: drain, then unload."""


_LIVE = frozenset({VersionState.LOADING, VersionState.READY, VersionState.DRAINING})


def plan(
    targets: Mapping[AliasKey, VersionKey],
    routes: Mapping[AliasKey, VersionKey],
    states: Mapping[VersionKey, VersionState],
    resource_preserving: frozenset[str] = frozenset(),
    *,
    lazy: frozenset[str] = frozenset(),
    demanded: frozenset[VersionKey] = frozenset(),
    resident: frozenset[VersionKey] = frozenset(),
) -> Plan:
    """Decide the next step from the registry's targets, the current routes and version states.

    ``lazy``: models whose aliases load on demand; ``demanded``: versions a request waits for;
    ``resident``: versions loaded on demand, kept until evicted (never unloaded here).
    A FAILED target is not reloaded here; the manager forgets FAILED states when the registry
    changes, which makes them eligible again.
    """
    eager = {key for alias, key in targets.items() if alias.model not in lazy}
    wanted = eager | demanded
    outgoing = {
        key.model
        for key, state in states.items()
        if key.model in resource_preserving
        and key not in wanted
        and key not in resident
        and is_live(state)
    }
    load = tuple(
        sorted(
            key
            for key in wanted
            if (key not in states or states[key] is VersionState.UNLOADED)
            and key.model not in outgoing
        )
    )
    new_routes: dict[AliasKey, VersionKey] = {}
    for alias, target in targets.items():
        if states.get(target) is VersionState.READY:
            new_routes[alias] = target
            continue
        previous = routes.get(alias)
        if alias.model in resource_preserving:
            continue
        if previous is not None and states.get(previous) is VersionState.READY:
            new_routes[alias] = previous
    kept = wanted | set(new_routes.values()) | resident
    unload = tuple(
        sorted(
            key for key, state in states.items() if state is VersionState.READY and key not in kept
        )
    )
    return Plan(load=load, routes=new_routes, unload=unload)


def settled(
    targets: Mapping[AliasKey, VersionKey],
    routes: Mapping[AliasKey, VersionKey],
    states: Mapping[VersionKey, VersionState],
    lazy: frozenset[str] = frozenset(),
) -> bool:
    """Whether what the registry asks for is applied: every alias routed to its target, or
    its target given up on (FAILED: the old route stays, the operator sees why), or, for a
    lazy model, not asked for by any request yet."""
    return all(
        routes.get(alias) == target
        or states.get(target) is VersionState.FAILED
        or (alias.model in lazy and target not in states)
        for alias, target in targets.items()
    )


def is_live(state: VersionState) -> bool:
    """True for states that hold (or are about to hold) a loaded model."""
    return state in _LIVE
