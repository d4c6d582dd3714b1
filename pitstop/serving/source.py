"""The registry as the serving layer reads it: the seam the ModelManager and its loader use.

The registry (:class:`pitstop.registry.Registry`) is the production implementation; tests drive
the manager with a fake one (``tests/serving/fakes.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol

from pitstop.registry import RegistrySnapshot, VersionRecord


class VersionSource(Protocol):
    """What the manager needs from the registry. Every method blocks; the manager calls them
    from worker threads."""

    def generation(self) -> int: ...

    def listen(self, on_change: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``on_change`` from another thread on every registry change (and after every
        reconnect); return the function that stops it, or None when the registry cannot
        announce changes and must be polled."""
        ...

    def snapshot(self) -> RegistrySnapshot: ...

    def version(self, model: str, ref: str | int) -> VersionRecord:
        """One version's record (a number or an alias); VersionNotFound if there is none."""
        ...

    def fetch(self, record: VersionRecord) -> Path: ...

    def record_serving_state(
        self, replica: str, model: str, version: int, digest: str, state: str, error: str | None
    ) -> None: ...

    def trim_local_copies(self, keep: Collection[str]) -> None:
        """Let a remote artifact store's host cache drop what is not in ``keep`` (digests this
        process holds) once it is over its bound; nothing for a local store."""
        ...
