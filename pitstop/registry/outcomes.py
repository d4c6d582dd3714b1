"""Predictions and the outcomes joined to them: what the closed loop of issue 20 stores.

``predictions`` holds recent predictions (model, prediction id → version, arm, time, one value
per answered row) when a server keeps them in the registry (``PITSTOP_PREDICTIONS=registry``,
the default with several workers or replicas): every worker and replica can then join feedback
to any of them. It grows by one row per answered request and is pruned to the retention
(``PITSTOP_PREDICTIONS_TTL``) by the servers that write it.

``feedback`` holds one row per prediction that got feedback, with the version and arm that made
the prediction copied in (so it outlives the prediction's row) and the per-row figures the
online metrics need already computed (correct, absolute and squared error, reward); later
feedback for the same prediction replaces the earlier one. :meth:`Outcomes.sums` aggregates it
per (version, arm) in SQL. Observation, not catalog: nothing here is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from pitstop.registry.database import transaction
from pitstop.registry.schema import FeedbackRow, PredictionRow

LOOKUP_CHUNK: Final = 500
"""Ids per SELECT ... IN (...) (SQLite allows 32,766 parameters; PostgreSQL more)."""
WRITE_CHUNK: Final = 1_000


@dataclass(frozen=True)
class PredictionRecord:
    model: str
    id: str
    version: int
    arm: str
    """The traffic policy's arm (an alias or version number) that served it; "" when the
    caller named the version or no policy was in force."""
    at: datetime
    predicted: tuple[float | str, ...]
    """One value per answered row (at most 16): a number (score, label, argmax class) or a
    string label."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One prediction's outcome, joined to what made it."""

    model: str
    prediction_id: str
    version: int
    arm: str
    predicted_at: datetime
    observed_at: datetime
    received_at: datetime
    label: str | None = None
    value: float | None = None
    reward: float | None = None
    correct: int | None = None
    abs_error: float | None = None
    sq_error: float | None = None


@dataclass(frozen=True)
class OutcomeSums:
    """Sufficient statistics of one (version, arm)'s feedback."""

    version: int
    arm: str
    labels: int = 0
    correct: int = 0
    values: int = 0
    abs_error: float = 0.0
    sq_error: float = 0.0
    sq_error_sq: float = 0.0
    """Sum of squared errors squared (the variance of the MSE needs it)."""
    rewards: int = 0
    reward: float = 0.0
    reward_sq: float = 0.0
    conversions: int = 0
    """Rewards above zero."""

    def to_json(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.__dataclass_fields__}


class Outcomes:
    """Predictions and feedback of one registry (``registry.outcomes``)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def add_predictions(self, records: Sequence[PredictionRecord]) -> None:
        """Insert ``records``; a prediction id already there (a caller reusing its request
        ids) is replaced by the newer prediction."""
        rows = [
            {
                "model": r.model, "prediction_id": r.id, "version": r.version, "arm": r.arm,
                "predicted_at": r.at, "predicted": {"rows": list(r.predicted)},
            }
            for r in records
        ]  # fmt: skip
        self._upsert(PredictionRow, rows, ("model", "prediction_id"))

    def find_predictions(self, model: str, ids: Collection[str]) -> dict[str, PredictionRecord]:
        """The stored predictions of ``model`` among ``ids``."""
        found: dict[str, PredictionRecord] = {}
        wanted = list(dict.fromkeys(ids))
        with transaction(self._engine, write=False) as session:
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                chunk = wanted[start : start + LOOKUP_CHUNK]
                rows = session.scalars(
                    select(PredictionRow).where(
                        PredictionRow.model == model, PredictionRow.prediction_id.in_(chunk)
                    )
                )
                for row in rows:
                    predicted = tuple(row.predicted.get("rows", ()))
                    found[row.prediction_id] = PredictionRecord(
                        row.model, row.prediction_id, row.version, row.arm, row.predicted_at,
                        predicted,
                    )  # fmt: skip
        return found

    def prune_predictions(self, before: datetime) -> int:
        """Delete predictions made before ``before``; how many went."""
        with transaction(self._engine, write=True) as session:
            result = session.execute(
                delete(PredictionRow).where(PredictionRow.predicted_at < before)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def record_feedback(self, records: Sequence[FeedbackRecord]) -> int:
        """Store ``records`` (replacing earlier feedback for the same prediction); how many
        replaced an earlier one."""
        if not records:
            return 0
        models = {r.model for r in records}
        ids = [r.prediction_id for r in records]
        replaced = 0
        with transaction(self._engine, write=False) as session:
            for model in models:
                for start in range(0, len(ids), LOOKUP_CHUNK):
                    chunk = ids[start : start + LOOKUP_CHUNK]
                    replaced += len(
                        session.scalars(
                            select(FeedbackRow.prediction_id).where(
                                FeedbackRow.model == model, FeedbackRow.prediction_id.in_(chunk)
                            )
                        ).all()
                    )
        rows = [{f: getattr(r, f) for f in r.__dataclass_fields__} for r in records]
        self._upsert(FeedbackRow, rows, ("model", "prediction_id"))
        return replaced

    def sums(
        self,
        model: str,
        *,
        since: datetime | None = None,
        versions: Iterable[int] | None = None,
    ) -> list[OutcomeSums]:
        """Per (version, arm) sums of ``model``'s feedback on predictions made at or after
        ``since``, for ``versions`` only when given."""
        f = FeedbackRow
        query = (
            select(
                f.version,
                f.arm,
                func.count(f.correct),
                func.coalesce(func.sum(f.correct), 0),
                func.count(f.abs_error),
                func.coalesce(func.sum(f.abs_error), 0.0),
                func.coalesce(func.sum(f.sq_error), 0.0),
                func.coalesce(func.sum(f.sq_error * f.sq_error), 0.0),
                func.count(f.reward),
                func.coalesce(func.sum(f.reward), 0.0),
                func.coalesce(func.sum(f.reward * f.reward), 0.0),
                func.coalesce(func.sum(case((f.reward > 0, 1), else_=0)), 0),
            )
            .where(f.model == model)
            .group_by(f.version, f.arm)
            .order_by(f.version, f.arm)
        )
        if since is not None:
            query = query.where(f.predicted_at >= since)
        if versions is not None:
            query = query.where(f.version.in_(list(versions)))
        with transaction(self._engine, write=False) as session:
            rows = session.execute(query).all()
        sums = []
        for row in rows:
            n: list[float] = [float(x or 0) for x in row[2:]]
            sums.append(OutcomeSums(
                version=int(row[0]), arm=str(row[1]), labels=int(n[0]), correct=int(n[1]),
                values=int(n[2]), abs_error=n[3], sq_error=n[4], sq_error_sq=n[5],
                rewards=int(n[6]), reward=n[7], reward_sq=n[8], conversions=int(n[9]),
            ))  # fmt: skip
        return sums

    def models(self) -> list[str]:
        """Models with any feedback."""
        with transaction(self._engine, write=False) as session:
            return list(session.scalars(select(FeedbackRow.model).distinct()))

    def _upsert(self, table: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
        if not rows:
            return
        dialect = self._engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):  # pragma: no cover - registries are these
            raise NotImplementedError(f"registry on {dialect}")
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        columns = [c for c in rows[0] if c not in keys]
        # The last row for a key wins, as a later call's rows win over an earlier call's.
        unique = list({tuple(r[k] for k in keys): r for r in rows}.values())
        statement = insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=list(keys), set_={c: getattr(statement.excluded, c) for c in columns}
        )
        with transaction(self._engine, write=True) as session:
            for start in range(0, len(unique), WRITE_CHUNK):
                session.execute(statement, unique[start : start + WRITE_CHUNK])
