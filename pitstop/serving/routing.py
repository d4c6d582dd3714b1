"""Which loaded version a reference names: the lookup every request makes, as a function over
the ModelManager's tables (read on the event loop, never copied), with the messages that say
why a reference cannot serve.

A number names that version, which must be READY here; an alias (None: ``production``) names
what its route points at, which is READY by construction (see
:func:`pitstop.serving.version_policy.plan`). NotFound for what this server does not know,
Unavailable for what it knows but cannot serve now.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Final

from pitstop.errors import Unavailable, VersionNotFound
from pitstop.protocol.reference import VersionRef
from pitstop.serving.lease import LoadedVersion
from pitstop.serving.version_policy import AliasKey, VersionKey, VersionState

DEFAULT_ALIAS: Final = "production"


def resolve(
    model: str,
    ref: VersionRef,
    targets: Mapping[AliasKey, VersionKey],
    routes: Mapping[AliasKey, VersionKey],
    versions: Mapping[VersionKey, LoadedVersion],
    records: Container[VersionKey],
) -> LoadedVersion:
    """The loaded version ``ref`` of ``model`` serves. ``targets``: where the registry's aliases
    point; ``routes``: where this server routes them now; ``versions``: what it holds;
    ``records``: the versions the registry knows (registered, maybe not loaded)."""
    if not isinstance(ref, int):
        alias = ref or DEFAULT_ALIAS
        target = targets.get(AliasKey(model, alias))
        if target is None:
            raise VersionNotFound(
                f"failed to get model version from specified version string {alias!r}: "
                f"model {model!r} has no alias {alias!r} (a version is a number or an alias)"
            )
        routed = routes.get(AliasKey(model, alias))
        if routed is None:
            raise Unavailable(_why_unavailable(model, alias, target, versions))
        return versions[routed]
    key = VersionKey(model, ref)
    loaded = versions.get(key)
    if loaded is not None and loaded.state is VersionState.READY:
        return loaded
    if loaded is not None or key in records:
        state = "not loaded yet" if loaded is None else loaded.state.value
        detail = f": {loaded.error}" if loaded is not None and loaded.error else ""
        raise Unavailable(f"model {model!r} version {ref} is {state}{detail}")
    served = sorted(
        k.version for k, v in versions.items() if k.model == model and v.state is VersionState.READY
    )
    raise VersionNotFound(
        f"Request for unknown model: {model!r} version {ref} is not found (not served here; "
        f"served versions: {served or 'none'}; the model has no version {ref})"
    )


def _why_unavailable(
    model: str, alias: str, target: VersionKey, versions: Mapping[VersionKey, LoadedVersion]
) -> str:
    loaded = versions.get(target)
    if loaded is None:
        return f"model {model!r} ({alias} → v{target.version}) is not loaded yet"
    if loaded.state is VersionState.FAILED:
        return f"model {model!r} ({alias} → v{target.version}) failed to load: {loaded.error}"
    return f"model {model!r} ({alias} → v{target.version}) is {loaded.state.value}"
