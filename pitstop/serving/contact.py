"""Whether this process can reach the registry, and since when: the state of its contact.

The ModelManager's watch loop reports every read (:meth:`RegistryContact.reached`,
:meth:`RegistryContact.lost`); the change is logged once each way (not once per poll), and the
state is what health answers, metrics and ``pitstop status`` show. While the registry is out of
reach a server keeps serving what it has loaded and stays ready; it polls with back-off
(:func:`next_delay`) and converges on the first successful read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

SAFETY_POLL_S: Final = 2.0
"""Poll interval while change notices arrive: only a safety net then."""

MAX_DELAY_S: Final = 1.0
"""Longest wait between reads while the registry is out of reach: it bounds how late a replica
converges once it returns."""


class RegistryContact:
    """Reachable or not, since when (wall clock), and the last error."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.reachable = True
        self.since = clock()
        self.error: str | None = None
        self.failures = 0
        """Failed reads since the process started."""

    def reached(self) -> bool:
        """Record a successful read; True when it ends an outage."""
        if self.reachable:
            return False
        log.warning("registry reachable again after %.1f s; converging", self._clock() - self.since)
        self.reachable, self.since, self.error = True, self._clock(), None
        return True

    def lost(self, error: BaseException) -> None:
        """Record a failed read."""
        self.failures += 1
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if self.reachable:
            log.warning("registry unreachable, serving what is loaded: %s", message)
            self.reachable, self.since = False, self._clock()
        self.error = message

    def to_json(self) -> dict[str, Any]:
        return {
            "reachable": self.reachable,
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(),
            "error": self.error,
        }


class Listenable(Protocol):
    def listen(self, on_change: Callable[[], None]) -> Callable[[], None] | None: ...


async def follow(
    source: Listenable,
    read: Callable[[], Awaitable[object]],
    contact: RegistryContact,
    interval_s: float,
    regained: Callable[[], Awaitable[None]],
) -> None:
    """:func:`keep_in_touch` woken by ``source``'s change notices when it sends them (then
    polling every :data:`SAFETY_POLL_S` only as a safety net), polling every ``interval_s``
    when it does not."""
    loop, changed = asyncio.get_running_loop(), asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(changed.set)

    stop = await asyncio.to_thread(source.listen, wake)
    if stop is None:
        await keep_in_touch(read, contact, interval_s, regained)
        return
    try:
        await keep_in_touch(read, contact, max(interval_s, SAFETY_POLL_S), regained, changed)
    finally:
        await asyncio.to_thread(stop)


async def keep_in_touch(
    read: Callable[[], Awaitable[object]],
    contact: RegistryContact,
    interval_s: float,
    regained: Callable[[], Awaitable[None]],
    changed: asyncio.Event | None = None,
) -> None:
    """Call ``read`` every ``interval_s`` until cancelled, and at once whenever ``changed`` is
    set (a change notice), recording each outcome on ``contact``; while it fails, wait
    :func:`next_delay`; when it succeeds again, await ``regained``."""
    delay = interval_s
    while True:
        if changed is not None:
            changed.clear()
        try:
            await read()
        except Exception as exc:
            contact.lost(exc)
        else:
            if contact.reached():
                await regained()
        delay = next_delay(delay, interval_s, contact.reachable)
        if changed is None:
            await asyncio.sleep(delay)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), delay)


def next_delay(delay_s: float, interval_s: float, reachable: bool) -> float:
    """The wait before the next read: the poll interval while reachable, doubling up to
    :data:`MAX_DELAY_S` (or the interval, if longer) while not."""
    if reachable:
        return interval_s
    return min(delay_s * 2, max(interval_s, MAX_DELAY_S))
