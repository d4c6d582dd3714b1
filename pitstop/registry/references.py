"""Reference profiles: what a version's inputs looked like, for drift monitoring.

One JSON document per version (built by :mod:`pitstop.monitoring.profile`; opaque here), from a
file given at push time or from the first requests a server saw. Setting one is audited
(``reference.set``, with its source and size, not the profile) but is not a catalog change:
servers pick references up on their own schedule, so the generation does not move.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from pitstop.errors import ModelNotFound
from pitstop.registry.audit import append_event
from pitstop.registry.database import transaction
from pitstop.registry.names import check_actor
from pitstop.registry.schema import ReferenceRow
from pitstop.registry.views import model_row, version_row

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class StoredReference:
    model: str
    version: int
    profile: dict[str, Any]
    source: str
    created_at: datetime
    created_by: str


class References:
    """Shares the catalog's database (``registry.references``). Blocking, thread-safe."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def put(
        self,
        model: str,
        version: int,
        profile: dict[str, Any],
        *,
        source: str,
        actor: str,
        replace: bool = True,
    ) -> bool:
        """Store ``version``'s profile; with ``replace=False`` only if it has none (the first
        server to build one from traffic wins). True when stored. Raises ModelNotFound or
        VersionNotFound."""
        check_actor(actor)
        try:
            with transaction(self._engine, write=True) as session:
                row = model_row(session, model)
                version_row(session, row, version)
                existing = session.get(ReferenceRow, (row.id, version))
                if existing is not None and not replace:
                    return False
                now = self._clock()
                if existing is None:
                    session.add(
                        ReferenceRow(
                            model_id=row.id, version=version, profile=profile, source=source,
                            created_at=now, created_by=actor,
                        )
                    )  # fmt: skip
                else:
                    existing.profile, existing.source = profile, source
                    existing.created_at, existing.created_by = now, actor
                append_event(
                    session, at=now, actor=actor, action="reference.set", model=model,
                    version=version,
                    after={"source": source, "rows": profile.get("rows"),
                           "features": len(profile.get("features", []))},
                )  # fmt: skip
                return True
        except IntegrityError:
            if replace:
                raise
            return False  # another writer inserted it first

    def get(self, model: str, version: int) -> StoredReference | None:
        """The stored profile, or None (also for an unknown model or version)."""
        with transaction(self._engine, write=False) as session:
            try:
                row = model_row(session, model)
            except ModelNotFound:
                return None
            found = session.get(ReferenceRow, (row.id, version))
            if found is None:
                return None
            return StoredReference(
                model, version, dict(found.profile), found.source, found.created_at,
                found.created_by,
            )  # fmt: skip
