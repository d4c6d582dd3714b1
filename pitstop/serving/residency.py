"""Which loaded versions may stay when another must load: the memory budget as a pure decision.

A server holds *resident* versions. Some are **pinned**: a version an alias of an ``always``
model targets or routes to (today's behaviour: loaded at start, never evicted). The rest were
loaded **on demand** (a request named them) and may be evicted. :func:`admit` decides, for a
version about to load with an estimated memory need, which on-demand versions to unload first:
least recently used first, never one with requests in flight, never a pinned one. If evicting
everything evictable still does not make room (within ``PITSTOP_MEMORY_BUDGET``, and within
``PITSTOP_ON_DEMAND_MAX`` on-demand versions), the load is refused, and the request that needed it
gets 503 naming the budget, instead of the kernel's OOM killer taking the whole server.

The ModelManager applies the decision; tests/serving/test_residency.py tables it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pitstop.serving.version_policy import VersionKey

MIB = 1024 * 1024


@dataclass(frozen=True)
class Resident:
    key: VersionKey
    memory: int
    """Bytes the version holds: measured when it loaded (an estimate while it loads)."""
    last_used: float
    """When a request last took it (monotonic seconds); its load time before any request."""
    inflight: int = 0
    pinned: bool = False
    """An ``always`` model's alias targets it or routes to it: never evicted."""
    loading: bool = False
    """Not READY yet: counts against the budget, cannot be evicted."""


@dataclass(frozen=True)
class Admission:
    admitted: bool
    evict: tuple[VersionKey, ...]
    """Unload these first (least recently used first); empty when refused."""
    reason: str
    """Why it was refused (what the 503 says), or what the eviction frees."""


def used(residents: Sequence[Resident]) -> int:
    return sum(r.memory for r in residents)


def admit(
    need: int,
    residents: Sequence[Resident],
    budget: int | None,
    on_demand_max: int | None,
    *,
    pinned: bool = False,
) -> Admission:
    """Whether a version needing ``need`` bytes may load next to ``residents``, and what to
    evict for it. ``budget``: bytes every resident version may hold together (None: no
    budget). ``on_demand_max``: how many on-demand versions may be resident at once (None: no
    bound). ``pinned``: the newcomer is an ``always`` version, which counts against the budget
    and may evict on-demand versions but is never refused (it was loaded before budgets
    existed; refusing production would be worse than going over)."""
    evictable = sorted(
        (r for r in residents if not r.pinned and not r.loading and r.inflight == 0),
        key=lambda r: (r.last_used, r.key),
    )
    over_memory = 0 if budget is None else max(0, used(residents) + need - budget)
    count = sum(1 for r in residents if not r.pinned)
    over_count = 0 if on_demand_max is None or pinned else max(0, count + 1 - on_demand_max)
    chosen: list[Resident] = []
    freed = 0
    for resident in evictable:
        if freed >= over_memory and len(chosen) >= over_count:
            break
        chosen.append(resident)
        freed += resident.memory
    fits = freed >= over_memory and len(chosen) >= over_count
    evict = tuple(r.key for r in chosen)
    if fits or pinned:
        note = f"evicting {', '.join(map(str, evict))} ({freed / MIB:.0f} MiB)" if evict else "fits"
        if not fits:
            note += "; over the memory budget with pinned versions alone"
        return Admission(True, evict, note)
    held = used(residents)
    busy = held - sum(r.memory for r in evictable)
    if freed < over_memory and budget is not None:
        reason = (
            f"memory budget {budget / MIB:.0f} MiB exhausted: {held / MIB:.0f} MiB held by "
            f"{len(residents)} versions, {busy / MIB:.0f} MiB of it pinned, loading or in use; "
            f"this version needs about {need / MIB:.0f} MiB (retry later, or raise "
            "PITSTOP_MEMORY_BUDGET)"
        )
    else:
        reason = (
            f"{count} on-demand versions are resident, all in use (PITSTOP_ON_DEMAND_MAX "
            f"{on_demand_max}); retry later"
        )
    return Admission(False, (), reason)
