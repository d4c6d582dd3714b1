"""Loading one version off the event loop, under a timeout.

A load asks the trust policy (when there is one) whether the version may be loaded at all, then
fetches its files (re-verifying every digest), deserialises the model and warms it up, all in a
worker thread. A thread cannot be stopped: a load that times out keeps running,
and if it ever finishes, what it loaded is released. Retries and their back-off are the
manager's policy, not this module's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pitstop.errors import PitstopError, Unavailable
from pitstop.registry import VersionRecord
from pitstop.runtimes.base import Runtime, RuntimeMetadata
from pitstop.serving.warmup import WarmupReport, load_and_validate

log = logging.getLogger(__name__)

Loaded = tuple[Runtime, RuntimeMetadata, WarmupReport]


class Loader(Protocol):
    """What the ModelManager loads versions with: the loaded, warmed-up runtime of a record, or
    the exception that prevented it (``LoadTimeout`` and unexpected errors are retried, pitstop
    errors are not; see :func:`is_transient`). Must not block the event loop."""

    async def load(self, record: VersionRecord) -> Loaded: ...


class TrustPolicy(Protocol):
    """Whether a version may be loaded, decided from its record (digest) before any of its
    files is fetched or deserialised: the Engine builds it from ``PITSTOP_REQUIRE_SIGNATURE``.

    ``check`` runs in the load's worker thread and may block (it reads the registry). It
    returns when the version is trusted and raises a pitstop error whose message is the FAILED
    reason when it is not (not ``Unavailable``: a refusal is never retried; a registry that
    cannot be reached is ``RegistryUnavailable``, and is)."""

    def check(self, record: VersionRecord) -> None: ...


class LoadTimeout(TimeoutError):
    """The load did not finish within the loader's timeout."""


class VersionLoader:
    """Loads versions with ``fetch`` (record → verified local folder) and the warm-up settings;
    with a ``trust`` policy, only versions it accepts."""

    def __init__(
        self,
        fetch: Callable[[VersionRecord], Path],
        timeout_s: float,
        runtime_threads: int,
        warmup_runs: int,
        trust: TrustPolicy | None = None,
    ) -> None:
        self._fetch = fetch
        self._timeout_s = timeout_s
        self._threads = runtime_threads
        self._runs = warmup_runs
        self._trust = trust

    async def load(self, record: VersionRecord) -> Loaded:
        """The loaded, warmed-up runtime; ``TimeoutError`` after the timeout, or whatever
        fetching, loading or warming up raised."""
        future = asyncio.get_running_loop().run_in_executor(None, self._load_blocking, record)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout_s)
        except TimeoutError:
            future.add_done_callback(_release_late_load)
            raise LoadTimeout(f"load timed out after {self._timeout_s:g} s") from None

    def _load_blocking(self, record: VersionRecord) -> Loaded:
        if self._trust is not None:
            self._trust.check(record)  # before a single file is read
        path = self._fetch(record)  # re-verifies every file against the digest
        return load_and_validate(
            path,
            record.manifest,
            trust_pickle=record.trust_pickle,
            trust_code=record.trust_code,
            threads=self._threads,
            runs=self._runs,
        )


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a timeout, an unreachable artifact store (Unavailable) or an unexpected
    exception (an I/O error, say); not a refused, tampered or failing version, which pitstop's
    own errors describe."""
    return not isinstance(exc, PitstopError) or isinstance(exc, TimeoutError | Unavailable)


def failure_reason(exc: BaseException) -> str:
    """What an operator reads: pitstop's own messages (and this module's timeout) as they are,
    anything else prefixed with its type."""
    if isinstance(exc, PitstopError | LoadTimeout):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _release_late_load(future: asyncio.Future[Loaded]) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    runtime = future.result()[0]
    log.warning("a load that timed out finished later; unloading it")
    asyncio.get_running_loop().run_in_executor(None, runtime.unload)
