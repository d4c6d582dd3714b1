"""Which loaded version a reference names, and why one cannot serve: the routing lookup as a
table over made-up manager tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pitstop.errors import PitstopError, Unavailable, VersionNotFound
from pitstop.protocol.reference import VersionRef
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.routing import resolve
from pitstop.serving.version_policy import AliasKey, VersionKey, VersionState
from tests.serving.fakes import record


def held(number: int, state: VersionState, error: str | None = None) -> LoadedVersion:
    return LoadedVersion(record("m", number), state, datetime.now(UTC), error=error)


V1, V2, V3, V4 = (VersionKey("m", n) for n in (1, 2, 3, 4))
TARGETS = {
    AliasKey("m", "production"): V2,
    AliasKey("m", "staging"): V3,
    AliasKey("m", "next"): V4,  # targeted, not held here yet
}
ROUTES = {AliasKey("m", "production"): V1}  # production stays on v1 while v2 loads
VERSIONS = {
    V1: held(1, VersionState.READY),
    V2: held(2, VersionState.LOADING),
    V3: held(3, VersionState.FAILED, "boom"),
}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (None, 1),  # production's route, not its target, until the target is READY
        ("production", 1),
        (1, 1),
        (2, (Unavailable, "version 2 is LOADING")),
        (3, (Unavailable, "version 3 is FAILED: boom")),
        (4, (Unavailable, "version 4 is not loaded yet")),
        (5, (VersionNotFound, "served versions: [1]")),
        ("staging", (Unavailable, "(staging → v3) failed to load: boom")),
        ("next", (Unavailable, "(next → v4) is not loaded yet")),
        ("nightly", (VersionNotFound, "no alias 'nightly'")),
    ],
)
def test_a_reference_names_a_ready_version_or_says_why_not(
    ref: VersionRef, expected: int | tuple[type[PitstopError], str]
) -> None:
    known = set(TARGETS.values())
    if isinstance(expected, int):
        assert resolve("m", ref, TARGETS, ROUTES, VERSIONS, known).key.version == expected
        return
    kind, message = expected
    with pytest.raises(kind) as raised:
        resolve("m", ref, TARGETS, ROUTES, VERSIONS, known)
    assert message in str(raised.value)
