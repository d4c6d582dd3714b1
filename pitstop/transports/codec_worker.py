"""A process of its own that decodes request bodies too costly to decode in the server.

Some decodes are one long C call that holds the GIL: orjson parses a JSON document at about
10 ms per MiB of plain numbers and up to ~100 ms per MiB of nested empty lists, building Python
objects of up to ~35 times the body; numpy converts a gRPC message's typed contents element by
element. Meanwhile no other request of the server progresses. So large bodies of those kinds are
decoded here, in a separate process under an address-space limit, and handed back re-encoded as
binary tensors (:func:`~pitstop.protocol.binary_codec.encode_request`), which the server decodes
again at memcpy speed (numbers) or in a thread it can interrupt (BYTES).

A body that needs more memory than the limit is refused (PayloadTooLarge, 413) and, if it took
the process down, the process is replaced; the server itself never holds that memory.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import resource
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TypeVar

from pitstop.errors import PayloadTooLarge

log = logging.getLogger(__name__)

T = TypeVar("T")


NICENESS = 10
"""The worker's scheduling priority below the server's: decoding an oversized body is background
work; on a busy machine the event loop and the other clients get the CPU first."""


def _prepare(budget_bytes: int) -> None:
    """Runs first in the worker: a lower CPU priority, and an address space that may grow by
    ``budget_bytes`` from here."""
    os.nice(NICENESS)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            mapped = int(line.split()[1]) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (mapped + budget_bytes, mapped + budget_bytes))
            return


def _warm() -> None:
    """Nothing: submitted once so the process starts (and imports) before it is needed."""


class CodecWorker:
    """One decoding process, started with :meth:`start` and stopped with :meth:`close` on the
    server's event loop. Callers bound how many bodies wait for it (see CodecPool)."""

    def __init__(self, memory_bytes: int) -> None:
        self._memory_bytes = memory_bytes
        self._executor: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_prepare,
                initargs=(self._memory_bytes,),
            )
            self._executor.submit(_warm)

    async def run(
        self, decode: Callable[[bytes, str | None], T], data: bytes, hint: str | None
    ) -> T:
        """``decode(data, hint)`` in the worker (a module-level function: it is sent by name).
        Pitstop errors come back as it raised them; PayloadTooLarge when decoding needs more
        memory than the worker may use."""
        self.start()
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, decode, data, hint)
        except MemoryError:
            raise self._too_large() from None
        except BrokenProcessPool:
            log.warning("the JSON decoding process died; starting a new one")
            self.close()
            raise self._too_large() from None

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"decoding this body needs more than the {self._memory_bytes} bytes of memory a "
            "request may use; send fewer or flatter values, or binary tensor data"
        )

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
