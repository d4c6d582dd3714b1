"""Alias changes: moving and removing the name → version pointers, each with its audit event.

Both run inside the caller's write transaction, which has already taken the catalog lock.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from pitstop.errors import VersionNotFound
from pitstop.registry.audit import append_event
from pitstop.registry.schema import AliasRow, ModelRow


def move_alias(
    session: Session,
    model: ModelRow,
    alias: str,
    number: int,
    *,
    actor: str,
    reason: str | None,
    now: datetime,
) -> bool:
    """Point ``alias`` at version ``number`` (which the caller checked exists).

    Returns False, recording nothing, when the alias already points there.
    """
    row = session.get(AliasRow, (model.id, alias))
    if row is not None and row.version_number == number:
        return False
    before = None if row is None else {"version": row.version_number}
    if row is None:
        session.add(
            AliasRow(
                model_id=model.id,
                name=alias,
                version_number=number,
                updated_at=now,
                updated_by=actor,
            )
        )
    else:
        row.version_number, row.updated_at, row.updated_by = number, now, actor
    append_event(
        session, at=now, actor=actor, action="alias.set", model=model.name, alias=alias,
        version=number, before=before, after={"version": number}, reason=reason,
    )  # fmt: skip
    return True


def remove_alias(
    session: Session,
    model: ModelRow,
    alias: str,
    *,
    actor: str,
    reason: str | None,
    now: datetime,
) -> None:
    """Delete ``alias``; :class:`VersionNotFound` when the model has no such alias."""
    row = session.get(AliasRow, (model.id, alias))
    if row is None:
        raise VersionNotFound(f"model {model.name!r} has no alias {alias!r}")
    number = row.version_number
    session.delete(row)
    append_event(
        session, at=now, actor=actor, action="alias.delete", model=model.name, alias=alias,
        version=number, before={"version": number}, reason=reason,
    )  # fmt: skip
