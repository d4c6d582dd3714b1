"""The audit history: an append-only log of every catalog change (who, when, what, why).

Actions: ``model.create``, ``version.create``, ``alias.set``, ``alias.delete``, ``policy.set``,
``rollout.*``, ``reference.set``, ``token.*``, ``batch.run``, ``version.sign`` (a signature of a
version's digest: key id and algorithm, never a private key) and ``trust.policy`` (the set of
keys a server trusts, recorded when it differs from the last one recorded). ``before`` and
``after`` hold the changed values as JSON (``{"version": 3}`` for aliases, whole policies for
``policy.set``). Rows are inserted, never updated or deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from pitstop.errors import InvalidInput
from pitstop.registry.schema import AuditEventRow

ACTIONS: Final = frozenset(
    {
        "model.create",
        "version.create",
        "alias.set",
        "alias.delete",
        "policy.set",
        "rollout.start",
        "rollout.step",
        "rollout.promote",
        "rollout.rollback",
        "rollout.pause",
        "rollout.resume",
        "rollout.abort",
        "reference.set",
        "token.create",
        "batch.run",
        "token.revoke",
        "version.sign",
        "trust.policy",
    }
)
NO_MODEL: Final = ""
"""The ``model`` of events about no model (tokens, trust policies)."""


@dataclass(frozen=True)
class AuditEvent:
    """One recorded change. ``id`` increases with every event; ``at`` is UTC, tz-aware."""

    id: int
    at: datetime
    actor: str
    action: str
    model: str
    alias: str | None
    version: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None


def append_event(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    model: str,
    alias: str | None = None,
    version: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """Add an event to the caller's transaction, so it commits with the change it describes."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    session.add(
        AuditEventRow(
            at=at,
            actor=actor,
            action=action,
            model=model,
            alias=alias,
            version=version,
            before=before,
            after=after,
            reason=reason,
        )
    )


def read_events(
    session: Session,
    model: str | None = None,
    *,
    limit: int | None = None,
    since: datetime | None = None,
) -> list[AuditEvent]:
    """Events newest first, optionally of one model, at or after ``since``, at most ``limit``."""
    query = select(AuditEventRow).order_by(AuditEventRow.id.desc())
    if model is not None:
        query = query.where(AuditEventRow.model == model)
    if since is not None:
        if since.tzinfo is None:
            raise InvalidInput("since: give a tz-aware datetime")
        query = query.where(AuditEventRow.at >= since)
    if limit is not None:
        if limit < 1:
            raise InvalidInput(f"limit: must be at least 1, got {limit}")
        query = query.limit(limit)
    return [
        AuditEvent(
            id=row.id,
            at=row.at,
            actor=row.actor,
            action=row.action,
            model=row.model,
            alias=row.alias,
            version=row.version,
            before=row.before,
            after=row.after,
            reason=row.reason,
        )
        for row in session.scalars(query)
    ]
