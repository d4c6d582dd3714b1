"""Offline runs against registered versions, recorded in the audit history.

A batch scoring run (``pitstop batch``) records which version (number and digest) scored which
input into which output, how many rows and errors, how long it took and who ran it, as one
``batch.run`` event of the model: ``pitstop history MODEL`` answers "which version scored last
night's file". Nothing else is stored; the output folder keeps its own manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from pitstop.registry.audit import append_event
from pitstop.registry.database import transaction
from pitstop.registry.names import check_actor
from pitstop.registry.views import model_row


class Runs:
    """Batch runs of one registry (``registry.runs``)."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def record(
        self, model: str, version: int, details: dict[str, Any], *, actor: str,
        reason: str | None = None,
    ) -> None:  # fmt: skip
        """Append a ``batch.run`` event to ``model``'s history (ModelNotFound if it has none)."""
        check_actor(actor)
        with transaction(self._engine, write=True) as session:
            model_row(session, model)
            append_event(
                session, at=self._clock(), actor=actor, action="batch.run", model=model,
                version=version, after=details, reason=reason,
            )  # fmt: skip
