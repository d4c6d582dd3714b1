"""Serving states: what each server replica reports about the versions it loads.

Replicas report, the CLI's ``status`` reads. This is observation, not catalog: reports are
neither audited nor counted in the registry's generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pitstop.registry.schema import ServingStateRow


@dataclass(frozen=True)
class ServingState:
    """What one replica last reported about one version (``LOADING``, ``READY``, ...)."""

    replica: str
    model: str
    version: int
    digest: str
    state: str
    since: datetime
    """When the replica entered ``state`` (unchanged by repeated reports of the same state)."""
    error: str | None
    updated_at: datetime


def upsert_state(
    session: Session,
    replica: str,
    model: str,
    version: int,
    digest: str,
    state: str,
    error: str | None,
    now: datetime,
) -> None:
    """Insert or update one report; ``since`` becomes ``now`` only when ``state`` changes."""
    row = session.get(ServingStateRow, (replica, model, version))
    if row is None:
        session.add(
            ServingStateRow(
                replica=replica,
                model=model,
                version=version,
                digest=digest,
                state=state,
                since=now,
                error=error,
                updated_at=now,
            )
        )
        return
    if row.state != state:
        row.since = now
    row.digest, row.state, row.error, row.updated_at = digest, state, error, now


def read_states(session: Session, model: str | None) -> list[ServingState]:
    """Reports ordered by model, version and replica, optionally of one model."""
    query = select(ServingStateRow).order_by(
        ServingStateRow.model, ServingStateRow.version, ServingStateRow.replica
    )
    if model is not None:
        query = query.where(ServingStateRow.model == model)
    return [
        ServingState(
            replica=row.replica,
            model=row.model,
            version=row.version,
            digest=row.digest,
            state=row.state,
            since=row.since,
            error=row.error,
            updated_at=row.updated_at,
        )
        for row in session.scalars(query)
    ]


def clear_states(session: Session, replica: str) -> None:
    """Delete every report of ``replica``."""
    session.execute(delete(ServingStateRow).where(ServingStateRow.replica == replica))
