"""Replicas: every server registers itself, heartbeats, and says what it has applied.

Each server upserts its row every few seconds (:meth:`Replicas.heartbeat`): name, host, pid,
software version, start time, and the catalog generation it has *applied* — read, and every
alias target it serves loaded, verified and warmed (READY) or given up on (FAILED). A replica
whose heartbeat is older than the timeout is not live: ``pitstop status`` leaves it out, and an
alias move reads "applied on 2/3 replicas" over the live ones until all have it. Rows (and
their serving states) of replicas silent for :data:`FORGET_AFTER` are deleted by the next
heartbeat of any replica. Observation, not catalog: nothing here is audited or moves the
generation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pitstop.registry.database import transaction
from pitstop.registry.schema import ReplicaRow, ServingStateRow
from pitstop.registry.serving_state import ServingState, clear_states, read_states, upsert_state

FORGET_AFTER: Final = timedelta(days=1)


@dataclass(frozen=True)
class Replica:
    name: str
    host: str
    pid: int
    software: str
    started_at: datetime
    heartbeat_at: datetime
    applied_generation: int


@dataclass(frozen=True)
class Acknowledgement:
    """How many live replicas have applied a catalog generation."""

    generation: int
    applied: int
    live: int

    def __str__(self) -> str:
        return f"applied on {self.applied}/{self.live} replicas"


class Replicas:
    """The replicas table of one registry (``registry.replicas``)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def heartbeat(
        self,
        name: str,
        *,
        host: str,
        pid: int,
        software: str,
        started_at: datetime,
        applied_generation: int,
    ) -> None:
        """Upsert ``name``'s row, and forget replicas silent for :data:`FORGET_AFTER`."""
        now = self._clock()
        for attempt in range(2):
            try:
                with transaction(self._engine, write=True) as session:
                    row = session.get(ReplicaRow, name)
                    if row is None:
                        row = ReplicaRow(name=name)
                        session.add(row)
                    row.host, row.pid, row.software = host, pid, software
                    row.started_at, row.heartbeat_at = started_at, now
                    row.applied_generation = applied_generation
                    _forget(session, now - FORGET_AFTER)
                return
            except IntegrityError:
                if attempt == 1:  # two first heartbeats of one name raced: update the winner's
                    raise

    def live(self, timeout_s: float) -> list[Replica]:
        """Replicas whose last heartbeat is at most ``timeout_s`` old, by name."""
        oldest = self._clock() - timedelta(seconds=timeout_s)
        with transaction(self._engine, write=False) as session:
            rows = session.scalars(
                select(ReplicaRow)
                .where(ReplicaRow.heartbeat_at >= oldest)
                .order_by(ReplicaRow.name)
            )
            return [_replica(row) for row in rows]

    def leave(self, name: str) -> None:
        """A stopping server removes its row (its serving states go when the next one with
        its name starts, or with :data:`FORGET_AFTER`)."""
        with transaction(self._engine, write=True) as session:
            session.execute(delete(ReplicaRow).where(ReplicaRow.name == name))

    # -- what each replica reports about the versions it loads -------------------------------

    def record_state(
        self, replica: str, model: str, version: int, digest: str, state: str,
        error: str | None = None,
    ) -> None:  # fmt: skip
        """Upsert what ``replica`` reports about one version; ``since`` moves only when the
        state changes. Not audited and not a catalog change (the generation stays)."""
        now = self._clock()
        for attempt in range(2):
            try:
                with transaction(self._engine, write=True) as session:
                    upsert_state(session, replica, model, version, digest, state, error, now)
                return
            except IntegrityError:
                # Two first reports of one version raced; the retry updates the winner's row.
                if attempt == 1:
                    raise

    def states(self, model: str | None = None) -> list[ServingState]:
        """Reported states, optionally of one model, ordered by model, version and replica."""
        with transaction(self._engine, write=False) as session:
            return read_states(session, model)

    def clear_states(self, replica: str) -> None:
        """Forget everything ``replica`` reported (a starting server has nothing loaded)."""
        with transaction(self._engine, write=True) as session:
            clear_states(session, replica)


def acknowledgement(generation: int, live: list[Replica]) -> Acknowledgement:
    """How many of ``live`` have applied ``generation`` (or a later one)."""
    applied = sum(1 for replica in live if replica.applied_generation >= generation)
    return Acknowledgement(generation, applied, len(live))


def _replica(row: ReplicaRow) -> Replica:
    return Replica(
        name=row.name,
        host=row.host,
        pid=row.pid,
        software=row.software,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at,
        applied_generation=row.applied_generation,
    )


def _forget(session: Session, before: datetime) -> None:
    query = select(ReplicaRow.name).where(ReplicaRow.heartbeat_at < before)
    stale = list(session.scalars(query))
    if stale:
        session.execute(delete(ServingStateRow).where(ServingStateRow.replica.in_(stale)))
        session.execute(delete(ReplicaRow).where(ReplicaRow.name.in_(stale)))
