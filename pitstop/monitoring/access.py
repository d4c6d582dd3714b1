"""Denied calls: how many, of which action, for which reason (``pitstop_auth_denied_total``).

The security gate reports each denial here (``unauthenticated``, ``forbidden``,
``rate_limited``); the counts live in the server's :class:`~pitstop.monitoring.tally.Tally`, so
the workers of one server sum like the request series.
"""

from __future__ import annotations

import numpy as np

from pitstop.monitoring.tally import Tally

PREFIX = "access"


class AccessRecorder:
    """Counts of denied calls by (action, reason)."""

    def __init__(self, tally: Tally | None = None) -> None:
        self._tally = tally if tally is not None else Tally()
        self._cells: dict[tuple[str, str], np.ndarray] = {}

    def denied(self, action: str, reason: str) -> None:
        cells = self._cells.get((action, reason))
        if cells is None:
            cells = self._cells[(action, reason)] = self._tally.cells((PREFIX, action, reason))
        cells[0] += 1

    def counts(self) -> dict[tuple[str, str], int]:
        """Every (action, reason) counted, with its count (this tally's: every worker's when
        the tally was gathered)."""
        found: dict[tuple[str, str], int] = {}
        for key in self._tally:
            if len(key) == 3 and key[0] == PREFIX:
                action, reason = key[1], key[2]
                if isinstance(action, str) and isinstance(reason, str):
                    found[(action, reason)] = int(self._tally.cells(key)[0])
        return found
