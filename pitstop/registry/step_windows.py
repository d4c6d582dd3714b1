"""Step windows: each replica's summary of what each arm of a running rollout did this step.

Every replica publishes, about once a second, one row per (rollout, arm version): the step it
summarises and a JSON summary (request and error counts, a latency histogram, a bounded sample of
predictions; see :mod:`pitstop.serving.evidence`). The rollout controller reads a rollout's
rows and merges those of live replicas, so a canary is judged on all of its traffic, not on the
lease holder's share. Observation, not catalog: nothing here is audited or moves the generation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError

from pitstop.registry.database import transaction
from pitstop.registry.schema import StepWindowRow


@dataclass(frozen=True)
class StepWindow:
    rollout_id: int
    replica: str
    version: int
    step: int
    summary: Mapping[str, Any]
    updated_at: datetime


class StepWindows:
    """The step windows of one registry (``registry.step_windows``)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def publish(
        self,
        replica: str,
        windows: Collection[tuple[int, int, int, Mapping[str, Any]]],
        active: Collection[int],
    ) -> None:
        """Upsert ``replica``'s rows, each (rollout id, version, step, summary), and delete
        every row of a rollout not in ``active`` (ended rollouts)."""
        now = self._clock()
        for attempt in range(2):
            try:
                with transaction(self._engine, write=True) as session:
                    for rollout_id, version, step, summary in windows:
                        row = session.get(StepWindowRow, (rollout_id, replica, version))
                        if row is None:
                            row = StepWindowRow(
                                rollout_id=rollout_id, replica=replica, version=version
                            )
                            session.add(row)
                        row.step, row.summary, row.updated_at = step, dict(summary), now
                    session.execute(
                        delete(StepWindowRow).where(StepWindowRow.rollout_id.not_in(active))
                    )
                return
            except IntegrityError:
                if attempt == 1:  # a first publish raced another (same replica name): retry
                    raise

    def of(self, rollout_id: int) -> list[StepWindow]:
        """Every replica's rows about one rollout."""
        with transaction(self._engine, write=False) as session:
            rows = session.scalars(
                select(StepWindowRow).where(StepWindowRow.rollout_id == rollout_id)
            )
            return [
                StepWindow(r.rollout_id, r.replica, r.version, r.step, r.summary, r.updated_at)
                for r in rows
            ]
