"""The serving state in the vocabulary of the V2 model-repository extension."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from pitstop.errors import InvalidInput
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.version_policy import VersionKey, VersionState

REPOSITORY_STATES: Final[Mapping[VersionState, str]] = {
    VersionState.LOADING: "LOADING",
    VersionState.READY: "READY",
    VersionState.DRAINING: "UNLOADING",
    VersionState.UNLOADED: "UNAVAILABLE",
    VersionState.FAILED: "UNAVAILABLE",
}


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    """One row of the repository index."""

    name: str
    version: int
    state: str
    """READY, LOADING, UNLOADING or UNAVAILABLE."""
    reason: str
    """Why it is not READY ("" when it is)."""

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": str(self.version),
            "state": self.state,
            "reason": self.reason,
        }


def repository_rows(
    targets: Iterable[VersionKey],
    versions: Mapping[VersionKey, LoadedVersion],
    held: Collection[str],
) -> list[RepositoryEntry]:
    """One row per version targeted or held, sorted: name, version, state (READY, LOADING,
    UNLOADING, UNAVAILABLE) and a reason when not ready. ``held`` names the models an operator
    unloaded through the repository API."""
    rows = []
    for key in sorted(set(targets) | set(versions)):
        loaded = versions.get(key)
        if key.model in held and loaded is None:
            state, reason = "UNAVAILABLE", "unloaded through the repository API"
        elif loaded is None:
            state, reason = "UNAVAILABLE", "not loaded"
        else:
            state, reason = REPOSITORY_STATES[loaded.state], loaded.error or ""
        rows.append(RepositoryEntry(key.model, key.version, state, reason))
    return rows


UNLOAD_PARAMETERS: Final = frozenset({"unload_dependents"})
"""Unload parameters accepted: Triton's ``unload_dependents`` (no pitstop model depends on
another, so there is nothing more to unload either way)."""


def check_repository_parameters(action: str, parameters: Mapping[str, object]) -> None:
    """Refuse, naming it, any parameter of a repository ``load`` or ``unload`` that pitstop
    would not apply. Triton's ``config`` (a configuration override) and ``file:…`` (model files
    sent with the request) are refused: a served version is the content-addressed package in
    the registry, so what serves is always what ``pitstop models push`` registered."""
    for name, value in parameters.items():
        if action == "unload" and name in UNLOAD_PARAMETERS:
            if not isinstance(value, bool):
                raise InvalidInput(f"parameters.{name} must be a bool")
            continue
        if action == "load" and name == "config":
            why = (
                "a configuration override is not applied: a version's configuration is part "
                "of its registered package (pitstop.yaml); push a new version with the changed "
                "configuration and point an alias at it"
            )
        elif action == "load" and name.startswith("file:"):
            why = (
                "model files cannot be sent with a load request: push them as a new version "
                "with `pitstop models push` and point an alias at it"
            )
        else:
            why = f"pitstop's repository {action} takes no such parameter"
        raise InvalidInput(f"parameters.{name!r}: {why}")
