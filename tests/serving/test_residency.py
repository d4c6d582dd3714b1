"""The memory budget's decision, as a table: what to evict (LRU, never pinned, loading or busy
versions) so that a load fits, or why it cannot."""

from __future__ import annotations

import pytest

from pitstop.serving.residency import Resident, admit
from pitstop.serving.version_policy import VersionKey

MIB = 1 << 20


def r(name: str, mib: int, used: float, *, inflight: int = 0, pinned: bool = False,
      loading: bool = False) -> Resident:  # fmt: skip
    return Resident(VersionKey(name, 1), mib * MIB, used, inflight, pinned, loading)


A, B, C = r("a", 100, 1.0), r("b", 100, 2.0), r("c", 100, 3.0)


@pytest.mark.parametrize(
    ("need", "residents", "budget", "cap", "pinned", "admitted", "evicted"),
    [
        # room left: nothing evicted
        (100, [A, B], 300, None, False, True, []),
        # no budget, no cap
        (10_000, [A, B, C], None, None, False, True, []),
        # the least recently used goes first
        (100, [C, A, B], 300, None, False, True, ["a"]),
        # as many as needed, oldest first
        (250, [A, B, C], 300, None, False, True, ["a", "b", "c"][:3]),
        # busy and loading versions are skipped
        (100, [r("a", 100, 1.0, inflight=1), B, C], 300, None, False, True, ["b"]),
        (100, [r("a", 100, 1.0, loading=True), B, C], 300, None, False, True, ["b"]),
        # pinned versions are never evicted: refused
        (
            100,
            [r("a", 150, 1.0, pinned=True), r("b", 150, 2.0, pinned=True)],
            300,
            None,
            False,
            False,
            [],
        ),
        # ... unless the newcomer is pinned itself: admitted over the budget
        (
            100,
            [r("a", 150, 1.0, pinned=True), r("b", 150, 2.0, pinned=True)],
            300,
            None,
            True,
            True,
            [],
        ),
        # a pinned newcomer still evicts on-demand versions first
        (100, [r("a", 200, 1.0, pinned=True), B], 300, None, True, True, ["b"]),
        # the on-demand count: one over the cap evicts the oldest
        (1, [A, B, C], None, 3, False, True, ["a"]),
        # the cap never counts pinned versions, and never refuses a pinned newcomer
        (1, [r("a", 1, 1.0, pinned=True), B, C], None, 3, False, True, []),
        (1, [A, B, C], None, 3, True, True, []),
        # everything busy at the cap: refused
        (1, [r("a", 1, 1.0, inflight=2), r("b", 1, 2.0, inflight=1)], None, 2, False, False, []),
        # an estimate bigger than the whole budget: refused even with everything evictable
        (400, [A, B], 300, None, False, False, []),
    ],
)
def test_admit(
    need: int,
    residents: list[Resident],
    budget: int | None,
    cap: int | None,
    pinned: bool,
    admitted: bool,
    evicted: list[str],
) -> None:
    found = admit(need * MIB, residents, None if budget is None else budget * MIB, cap,
                  pinned=pinned)  # fmt: skip
    assert (found.admitted, [k.model for k in found.evict]) == (admitted, evicted), found.reason


def test_a_refusal_names_the_budget_and_what_holds_it() -> None:
    found = admit(200 * MIB, [r("a", 150, 1.0, pinned=True), r("b", 100, 2.0, inflight=1)],
                  300 * MIB, None)  # fmt: skip
    assert not found.admitted
    assert found.reason.startswith("memory budget 300 MiB exhausted: 250 MiB held by 2 versions")
    assert "needs about 200 MiB" in found.reason
