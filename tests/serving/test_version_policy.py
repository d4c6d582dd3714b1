"""The availability-preserving version policy, as a table."""

from __future__ import annotations

import pytest

from pitstop.serving.version_policy import AliasKey, Plan, VersionKey, VersionState, plan, settled

P = AliasKey("m", "production")
S = AliasKey("m", "staging")
V1, V2, V3 = VersionKey("m", 1), VersionKey("m", 2), VersionKey("m", 3)
R, L, F, D, U = (
    VersionState.READY,
    VersionState.LOADING,
    VersionState.FAILED,
    VersionState.DRAINING,
    VersionState.UNLOADED,
)

CASES = [
    # (what happens, targets, routes, states, expected plan)
    ("fresh start loads the target", {P: V1}, {}, {}, Plan((V1,), {}, ())),
    ("nothing routed while loading", {P: V1}, {}, {V1: L}, Plan((), {}, ())),
    ("ready target is routed", {P: V1}, {}, {V1: R}, Plan((), {P: V1}, ())),
    ("alias moves: load next to the old", {P: V2}, {P: V1}, {V1: R}, Plan((V2,), {P: V1}, ())),
    ("old keeps serving while new loads", {P: V2}, {P: V1}, {V1: R, V2: L}, Plan((), {P: V1}, ())),
    ("switch then drain the old", {P: V2}, {P: V1}, {V1: R, V2: R}, Plan((), {P: V2}, (V1,))),
    ("failed load keeps the old", {P: V2}, {P: V1}, {V1: R, V2: F}, Plan((), {P: V1}, ())),
    ("failed with nothing to keep", {P: V1}, {}, {V1: F}, Plan((), {}, ())),
    ("draining version is not routed", {P: V1}, {P: V2}, {V1: D, V2: R}, Plan((), {P: V2}, ())),
    ("unloaded target is loaded again", {P: V1}, {P: V2}, {V1: U, V2: R}, Plan((V1,), {P: V2}, ())),
    ("alias removed: unload", {}, {P: V1}, {V1: R}, Plan((), {}, (V1,))),
    (
        "shared version kept for other alias",
        {P: V2, S: V1},
        {P: V1},
        {V1: R, V2: R},
        Plan((), {P: V2, S: V1}, ()),
    ),
    ("two aliases one version", {P: V1, S: V1}, {}, {V1: R}, Plan((), {P: V1, S: V1}, ())),
    (
        "rapid moves: only target and route kept",
        {P: V3},
        {P: V1},
        {V1: R, V2: R, V3: L},
        Plan((), {P: V1}, (V2,)),
    ),
    ("old route lost if it is not ready", {P: V2}, {P: V1}, {V1: D, V2: L}, Plan((), {}, ())),
]


@pytest.mark.parametrize(
    ("what", "targets", "routes", "states", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_plan(what: str, targets, routes, states, expected: Plan) -> None:
    result = plan(targets, routes, states)
    assert result.load == expected.load
    assert dict(result.routes) == dict(expected.routes)
    assert result.unload == expected.unload


RP = frozenset({"m"})
RESOURCE_PRESERVING = [
    ("alias moves: drop the route, unload first", {P: V2}, {P: V1}, {V1: R}, Plan((), {}, (V1,))),
    ("no load while the old one drains", {P: V2}, {}, {V1: D}, Plan((), {}, ())),
    ("load once the old one is gone", {P: V2}, {}, {V1: U}, Plan((V2,), {}, ())),
    ("load once the old one is forgotten", {P: V2}, {}, {}, Plan((V2,), {}, ())),
    ("new one ready: route it", {P: V2}, {}, {V2: R}, Plan((), {P: V2}, ())),
    ("two aliases load side by side", {P: V1, S: V2}, {P: V1}, {V1: R}, Plan((V2,), {P: V1}, ())),
    ("failed target leaves nothing routed", {P: V2}, {}, {V2: F}, Plan((), {}, ())),
]


@pytest.mark.parametrize(
    ("what", "targets", "routes", "states", "expected"),
    RESOURCE_PRESERVING,
    ids=[c[0] for c in RESOURCE_PRESERVING],
)
def test_resource_preserving_plan(what: str, targets, routes, states, expected: Plan) -> None:
    result = plan(targets, routes, states, resource_preserving=RP)
    assert result.load == expected.load
    assert dict(result.routes) == dict(expected.routes)
    assert result.unload == expected.unload


def test_other_models_are_not_resource_preserving() -> None:
    result = plan({P: V2}, {P: V1}, {V1: R}, resource_preserving=frozenset({"other"}))
    assert result == Plan((V2,), {P: V1}, ())


def test_only_ready_versions_are_ever_routed() -> None:
    states_options = list(VersionState)
    for s1 in states_options:
        for s2 in states_options:
            result = plan({P: V2}, {P: V1}, {V1: s1, V2: s2})
            for key in result.routes.values():
                assert {V1: s1, V2: s2}[key] is VersionState.READY


@pytest.mark.parametrize(
    ("what", "targets", "routes", "states", "expected"),
    [
        ("nothing asked", {}, {}, {}, True),
        ("target routed", {P: V1}, {P: V1}, {V1: R}, True),
        ("still on the old while the new loads", {P: V2}, {P: V1}, {V1: R, V2: L}, False),
        ("the new one failed: given up on", {P: V2}, {P: V1}, {V1: R, V2: F}, True),
        ("one alias of two still loading", {P: V1, S: V2}, {P: V1}, {V1: R, V2: L}, False),
        ("both aliases routed", {P: V1, S: V2}, {P: V1, S: V2}, {V1: R, V2: R}, True),
    ],
)
def test_a_generation_is_applied_once_every_target_serves_or_failed(
    what: str, targets, routes, states, expected: bool
) -> None:
    assert settled(targets, routes, states) is expected, what


LAZY = frozenset({"m"})
ON_DEMAND_CASES = [
    # (what happens, targets, routes, states, demanded, resident, expected plan)
    ("a lazy model loads nothing at start", {P: V1}, {}, {}, set(), set(), Plan((), {}, ())),
    ("a demanded target loads", {P: V1}, {}, {}, {V1}, set(), Plan((V1,), {}, ())),
    ("a loaded lazy target is routed", {P: V1}, {}, {V1: R}, set(), {V1}, Plan((), {P: V1}, ())),
    ("an unaliased version loads when demanded", {P: V1}, {}, {}, {V3}, set(),
     Plan((V3,), {}, ())),
    ("a resident version is kept though nothing targets it", {P: V1}, {P: V1}, {V1: R, V3: R},
     set(), {V1, V3}, Plan((), {P: V1}, ())),
    ("an alias move keeps the old version resident", {P: V2}, {P: V1}, {V1: R}, {V2}, {V1},
     Plan((V2,), {P: V1}, ())),
    ("an evicted target is loaded again only on demand", {P: V1}, {}, {V1: U}, set(), set(),
     Plan((), {}, ())),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "targets", "routes", "states", "demanded", "resident", "expected"),
    ON_DEMAND_CASES,
    ids=[c[0] for c in ON_DEMAND_CASES],
)
def test_plan_on_demand(
    what: str, targets, routes, states, demanded, resident, expected: Plan
) -> None:
    result = plan(
        targets, routes, states, lazy=LAZY, demanded=frozenset(demanded),
        resident=frozenset(resident),
    )  # fmt: skip
    assert result.load == expected.load
    assert dict(result.routes) == dict(expected.routes)
    assert result.unload == expected.unload


def test_a_lazy_alias_nobody_asked_for_is_settled() -> None:
    assert settled({P: V1}, {}, {}, LAZY)
    assert not settled({P: V1}, {}, {V1: L}, LAZY)
    assert not settled({P: V1}, {}, {}, frozenset())
