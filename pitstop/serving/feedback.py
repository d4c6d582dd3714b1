"""Feedback: what happened after a prediction, checked, joined to it and stored.

A feedback item is ``{"id": ..., "label" | "value" | "reward": ..., "at": ..., "row": ...}``:
exactly one outcome — a ``label`` (a class; compared with the predicted label or argmax
class), a ``value`` (a number; compared with the predicted score), or a ``reward`` (any number;
a click is 1, revenue is its amount) —, optionally when it happened (``at``: ISO 8601 or Unix
seconds; default: when it arrives) and which row of a batched prediction it is about (``row``,
default 0). :func:`parse_items` checks a whole body before anything is stored and names the
offending field (``feedback[3].reward``). :class:`FeedbackDesk` joins the items to the
:class:`~pitstop.serving.prediction_log.PredictionLog`: known ids are stored in the registry
(later feedback for the same id replaces earlier), unknown and expired ones are counted and
reported back, never stored.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from pitstop.errors import InvalidInput
from pitstop.protocol.prediction_id import MAX_LENGTH
from pitstop.registry import FeedbackRecord, Outcomes, PredictionRecord
from pitstop.serving.prediction_log import PredictionLog

MAX_ITEMS: Final = 10_000
"""Feedback items per call."""
LISTED: Final = 20
"""Unknown or expired ids named in a receipt (the counts cover all)."""
OUTCOMES: Final = ("label", "value", "reward")
FIELDS: Final = frozenset({"id", "at", "row", *OUTCOMES})


@dataclass(frozen=True)
class FeedbackItem:
    id: str
    kind: str
    """label, value or reward."""
    outcome: str | float
    at: datetime | None = None
    row: int = 0


@dataclass(frozen=True)
class Receipt:
    """What became of one call's items."""

    accepted: int = 0
    replaced: int = 0
    """Accepted items that replaced earlier feedback for the same prediction."""
    unknown: int = 0
    expired: int = 0
    unknown_ids: tuple[str, ...] = ()
    expired_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "replaced": self.replaced,
            "unknown": self.unknown,
            "expired": self.expired,
            "unknown_ids": list(self.unknown_ids),
            "expired_ids": list(self.expired_ids),
        }


def parse_items(body: Any) -> list[FeedbackItem]:
    """The items of a feedback body: one item object, a list of them, or ``{"feedback":
    [...]}``. InvalidInput names the first offending field."""
    if isinstance(body, Mapping) and "feedback" in body:
        if set(body) - {"feedback"}:
            raise InvalidInput(
                f"unknown field {sorted(set(body) - {'feedback'})[0]!r} next to 'feedback'"
            )
        items, where = body["feedback"], "feedback"
    elif isinstance(body, Mapping):
        items, where = [body], ""
    else:
        items, where = body, "feedback"
    if not isinstance(items, list):
        raise InvalidInput("'feedback' must be a list of {id, label | value | reward} objects")
    if not items:
        raise InvalidInput("'feedback' is empty: send at least one item")
    if len(items) > MAX_ITEMS:
        raise InvalidInput(f"'feedback' has {len(items)} items; at most {MAX_ITEMS} per call")
    return [
        _item(raw, f"{where}[{index}]" if where else "feedback") for index, raw in enumerate(items)
    ]


def _item(raw: Any, where: str) -> FeedbackItem:
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{where} must be an object with 'id' and one of label, value, reward")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise InvalidInput(
            f"{where}.{unknown[0]}: unknown field (known: id, label, value, reward, at, row)"
        )
    prediction_id = raw.get("id")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise InvalidInput(f"{where}.id: a prediction id (a non-empty string) is required")
    if len(prediction_id) > MAX_LENGTH:
        raise InvalidInput(f"{where}.id: longer than {MAX_LENGTH} characters")
    given = [kind for kind in OUTCOMES if raw.get(kind) is not None]
    if len(given) != 1:
        raise InvalidInput(
            f"{where}: exactly one of label, value, reward is required, got "
            f"{', '.join(given) or 'none'}"
        )
    kind = given[0]
    outcome: str | float
    value = raw[kind]
    if kind == "label":
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"{where}.label: must be a finite number or a string")
        if not isinstance(value, str | int | float) or (isinstance(value, str) and not value):
            raise InvalidInput(f"{where}.label: must be a non-empty string or a number")
        outcome = value if isinstance(value, str) else float(value)
        if isinstance(outcome, str) and len(outcome) > MAX_LENGTH:
            raise InvalidInput(f"{where}.label: longer than {MAX_LENGTH} characters")
    else:
        if isinstance(value, bool) and kind == "reward":
            value = int(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidInput(f"{where}.{kind}: must be a finite number, got {value!r}")
        outcome = float(value)
    return FeedbackItem(
        prediction_id, kind, outcome, _at(raw.get("at"), where), _row(raw.get("row"), where)
    )


def _at(raw: Any, where: str) -> datetime | None:
    if raw is None:
        return None
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(float(raw), UTC)
        if isinstance(raw, str):
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    raise InvalidInput(f"{where}.at: an ISO 8601 time or Unix seconds, got {raw!r}")


def _row(raw: Any, where: str) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidInput(f"{where}.row: a row index (an integer >= 0), got {raw!r}")
    return raw


def joined(
    model: str, item: FeedbackItem, prediction: PredictionRecord, now: datetime, where: str
) -> FeedbackRecord:
    """The stored row for ``item`` about ``prediction``; InvalidInput when the outcome cannot
    be compared with what was predicted (a row it did not have, a value against a label)."""
    base = FeedbackRecord(
        model=model, prediction_id=item.id, version=prediction.version, arm=prediction.arm,
        predicted_at=prediction.at, observed_at=item.at or now, received_at=now,
    )  # fmt: skip
    if item.kind == "reward":
        return replace(base, reward=float(item.outcome))
    if item.row >= len(prediction.predicted):
        raise InvalidInput(
            f"{where}.row: prediction {item.id!r} answered {len(prediction.predicted)} "
            f"row(s) (at most 16 are kept); row {item.row} has no prediction"
        )
    guess = prediction.predicted[item.row]
    if item.kind == "label":
        label = item.outcome
        if isinstance(guess, str):
            text = label if isinstance(label, str) else _number_text(label)
            return replace(base, label=text, correct=int(text == guess))
        number = _number(label)
        if number is None:
            raise InvalidInput(
                f"{where}.label: {label!r} is not a number, and prediction {item.id!r} "
                f"predicted the number {guess:g} (a class index or a numeric label)"
            )
        # A float32 output travels as the shortest decimal that reads back as that float32:
        # equal to float32 precision is equal.
        same = math.isclose(number, guess, rel_tol=1e-6, abs_tol=1e-12)
        return replace(base, label=_number_text(number), correct=int(same))
    if isinstance(guess, str):
        raise InvalidInput(
            f"{where}.value: prediction {item.id!r} predicted the label {guess!r}; send "
            "'label' for classifiers, 'value' for numeric predictions"
        )
    error = float(item.outcome) - guess
    return replace(base, value=float(item.outcome), abs_error=abs(error), sq_error=error * error)


def _number(label: str | float) -> float | None:
    if isinstance(label, float):
        return label
    try:
        number = float(label)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


class FeedbackDesk:
    """Joins feedback to recent predictions and stores it (see the module docstring)."""

    def __init__(
        self,
        log: PredictionLog,
        outcomes: Outcomes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log
        self._outcomes = outcomes
        self._clock = clock
        self.counts: Counter[tuple[str, str]] = Counter()
        """(model, result) → feedback items: accepted, unknown, expired, rejected."""

    async def submit(self, model: str, items: Sequence[FeedbackItem]) -> Receipt:
        """Join and store ``items`` about ``model`` (all of a call's known items, or none when
        one of them cannot be compared with its prediction: InvalidInput naming it)."""
        ids = list(dict.fromkeys(item.id for item in items))
        found, expired = await self.log.find(model, ids)
        now = self._clock()
        records: dict[str, FeedbackRecord] = {}
        unknown: list[str] = []
        late: list[str] = []
        try:
            for index, item in enumerate(items):
                prediction = found.get(item.id)
                if prediction is None:
                    (late if item.id in expired else unknown).append(item.id)
                    continue
                records[item.id] = joined(model, item, prediction, now, f"feedback[{index}]")
        except InvalidInput:
            self.counts[(model, "rejected")] += len(items)
            raise
        replaced = (
            await asyncio.to_thread(self._outcomes.record_feedback, list(records.values()))
            if records
            else 0
        )
        self.counts[(model, "accepted")] += len(records)
        self.counts[(model, "unknown")] += len(unknown)
        self.counts[(model, "expired")] += len(late)
        return Receipt(
            accepted=len(records), replaced=replaced, unknown=len(unknown), expired=len(late),
            unknown_ids=tuple(unknown[:LISTED]), expired_ids=tuple(late[:LISTED]),
        )  # fmt: skip

    def rejected(self, model: str, count: int = 1) -> None:
        """Count items a transport refused before :meth:`submit` (a malformed body)."""
        self.counts[(model, "rejected")] += count
