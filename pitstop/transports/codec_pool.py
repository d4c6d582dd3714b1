"""Where bodies are decoded and encoded: on the event loop, in a thread, or in a process.

Decoding a request and encoding a response is CPU work proportional to the body (JSON, one
Python object per BYTES element). A large body coded on the event loop would hold every other
client for as long as it takes. So: bodies up to :data:`INLINE_BYTES` are coded on the loop
(about a millisecond at worst); larger ones in a thread, where Python switches back to the loop
every few milliseconds while the codec runs Python code; and large JSON, which orjson parses in
one C call that holds the GIL throughout, in a process of its own
(:mod:`~pitstop.transports.codec_worker`).

Large bodies are coded at most ``threads`` at a time, and at most ``max_waiting`` wait; more are
refused as Overloaded (429 / RESOURCE_EXHAUSTED). docs/hostile-input.md states what this bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final, ParamSpec, TypeVar

import numpy as np

from pitstop.errors import Overloaded
from pitstop.protocol.binary_codec import decode_body, normalize_body
from pitstop.protocol.reference import natural
from pitstop.protocol.tensor import InferRequest
from pitstop.transports.codec_worker import CodecWorker

INLINE_BYTES: Final = 128 * 1024
"""Bodies up to this size are coded on the event loop (~1 ms of work): a thread hop would cost
more than it saves."""

P = ParamSpec("P")
T = TypeVar("T")


class CodecPool:
    """Runs codecs of large bodies off the event loop. Create, use and close it on one loop;
    ``worker`` decodes large JSON."""

    def __init__(
        self,
        worker: CodecWorker,
        threads: int = 1,
        max_waiting: int = 1024,
        inline_bytes: int = INLINE_BYTES,
    ) -> None:
        self._worker = worker
        self._executor = ThreadPoolExecutor(threads, "pitstop-codec")
        self._max_pending = threads + max_waiting
        self._pending = 0
        self._inline_bytes = inline_bytes

    async def decode_body(self, body: bytes, header_length: str | None) -> InferRequest:
        """:func:`~pitstop.protocol.binary_codec.decode_body`, wherever it costs the others
        least: a large JSON part is parsed by the worker process and comes back as raw
        tensors."""
        json_size = len(body) if header_length is None else natural(header_length.strip())
        if json_size is not None and json_size > self._inline_bytes:
            body, header_length = await self.isolate(normalize_body, body, header_length)
        return await self.run(len(body), decode_body, body, header_length)

    async def isolate(
        self, decode: Callable[[bytes, str | None], T], data: bytes, hint: str | None
    ) -> T:
        """``decode(data, hint)`` in the worker process (see CodecWorker.run)."""
        self._admit()
        self._pending += 1
        try:
            return await self._worker.run(decode, data, hint)
        finally:
            self._pending -= 1

    def inline(self, size: int) -> bool:
        """Whether a body of ``size`` bytes is small enough to code on the event loop."""
        return size <= self._inline_bytes

    def _admit(self) -> None:
        if self._pending >= self._max_pending:
            raise Overloaded(f"{self._pending} large bodies are already waiting to be coded")

    async def run(self, size: int, code: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``code(*args, **kwargs)`` for a body of about ``size`` bytes: inline when small, else
        in the pool. Overloaded when too many large bodies already wait."""
        if size <= self._inline_bytes:
            return code(*args, **kwargs)
        self._admit()
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, lambda: code(*args, **kwargs))
        finally:
            self._pending -= 1

    def close(self) -> None:
        """Stop the threads and the worker; work already running finishes, waiting work is
        dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._worker.close()


def outputs_size(outputs: Mapping[str, np.ndarray]) -> int:
    """About how many bytes encoding ``outputs`` produces: their buffers, and 16 per element of
    an object (BYTES) array, whose elements live outside it."""
    return sum(a.size * 16 if a.dtype.kind == "O" else a.nbytes for a in outputs.values())
