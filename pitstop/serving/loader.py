"""Loading one version off the event loop, under a timeout.

A load asks the trust policy (when there is one) whether the version may be loaded at all, then
fetches its files (re-verifying every digest), deserialises the model and warms it up, all in a
worker thread. A thread cannot be stopped: a load that times out keeps running,
and if it ever finishes, what it loaded is released. Retries and their back-off are the
manager's policy, not this module's.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
from collections.abc import Callable
from dataclasses import replace
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
        trim_arenas()  # measure what the version keeps, not what loading it passed through
        before = rss_bytes()
        runtime, metadata, report = load_and_validate(
            path,
            record.manifest,
            trust_pickle=record.trust_pickle,
            trust_code=record.trust_code,
            threads=self._threads,
            runs=self._runs,
        )
        trim_arenas()
        memory = memory_of(runtime, before, record.size_bytes)
        return runtime, metadata, replace(report, memory_bytes=memory)


def rss_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


FILES_OVERHEAD = 1.3
"""A loaded in-process version holds at least its files' size times this. Measured with
bench/multimodel.py: each 8 MiB ONNX model grew the server by 10.3-10.8 MiB once several were
loaded, when the growth seen during a single load (which reuses memory freed by evictions)
said less."""


def memory_of(runtime: Runtime, rss_before: int, files_bytes: int = 0) -> int:
    """What a just-loaded ``runtime`` holds: its worker process's RSS when it has one
    (``memory_bytes()``), else how much this process grew while loading it, but never less
    than :data:`FILES_OVERHEAD` times the version's files (a load that reuses memory freed
    by an evicted version grows the process by less than it holds). Loads are measured one
    at a time when a memory budget is set, so growth is theirs; the first load of a framework
    also counts the framework's import, which errs on the safe side."""
    measure = getattr(runtime, "memory_bytes", None)
    if callable(measure):
        found = measure()
        if isinstance(found, int) and found > 0:
            return found
    floor = int(files_bytes * FILES_OVERHEAD)
    return max(rss_bytes() - rss_before, floor, os.sysconf("SC_PAGE_SIZE"))


def release_memory() -> None:
    """Give memory freed by an unloaded version back to the system: collect cycles, then ask
    glibc to trim every malloc arena (``malloc_trim(0)``). Without the trim, versions loaded and
    evicted over and over from several threads leave their memory in per-thread arenas and
    the server's RSS climbs past any budget (measured: 135 → 614 MiB over 118 loads of 8 MiB
    models with 100 MiB resident; 135 → 260 MiB with it). Blocking: call it in a thread."""
    gc.collect()
    trim_arenas()


def trim_arenas() -> None:
    """``malloc_trim(0)`` where the C library is glibc; nothing elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    return trim


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
