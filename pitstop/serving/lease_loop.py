"""The loop of a controller that acts only while it holds a registry lease (the rollout and
bandit controllers): tick every ``tick_s`` until cancelled, a failed tick logged and the next
one tried, the lease released on the way out so another replica takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pitstop.errors import RegistryUnavailable
from pitstop.registry import Delivery

log = logging.getLogger(__name__)


async def run_leased(
    name: str,
    delivery: Delivery,
    lease: str,
    holder: str,
    tick: Callable[[], Awaitable[object]],
    tick_s: float,
) -> None:
    """Call ``tick`` every ``tick_s`` until cancelled (``tick`` acquires ``lease`` itself);
    ``name`` (``rollout controller``) labels the log lines."""
    try:
        while True:
            try:
                await tick()
            except RegistryUnavailable as exc:
                log.warning("%s waits for the registry: %s", name, exc)
            except Exception:
                log.exception("%s tick failed", name)
            await asyncio.sleep(tick_s)
    finally:
        await asyncio.to_thread(delivery.release_lease, lease, holder)
