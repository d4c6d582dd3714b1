"""How a loaded version runs requests: directly in the inference thread pool, or through a
:class:`~pitstop.serving.batcher.Batcher`. Both bound their queue and honour deadlines.

Deadlines are absolute times on the monotonic clock (``time.monotonic()``). A request whose
deadline has passed when its turn comes is never executed: it fails with ``DeadlineExceeded``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from pitstop.errors import DeadlineExceeded, InternalError, Overloaded, PitstopError

T = TypeVar("T")
Arrays = Mapping[str, np.ndarray]
Predict = Callable[[Arrays], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Executed:
    """A request's outputs and where its time went."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_ns: int
    batch_size: int
    """Rows in the runtime call that served it (1 request may share it with others)."""
    counts_execution: bool = True
    """True for exactly one request per runtime call, so statistics count each call once."""


class Execution(Protocol):
    """Runs one version's requests. ``run`` is called on the event loop and never blocks it;
    it raises Overloaded when its bounded queue is full, DeadlineExceeded for a request whose
    deadline passed before it ran, and InternalError for a failing runtime call."""

    async def run(self, inputs: Arrays, deadline: float | None, priority: int) -> Executed: ...

    @property
    def queued(self) -> int:
        """Requests accepted and not yet finished (waiting or running), for the queue gauge."""
        ...

    async def close(self) -> None:
        """Stop accepting work; pending work is finished first."""


def call_runtime(predict: Predict, inputs: Arrays, label: str) -> dict[str, np.ndarray]:
    """``predict(inputs)`` with unexpected exceptions turned into InternalError naming the
    version; pitstop errors (e.g. InvalidInput) pass through."""
    return guarded_call(lambda: predict(inputs), label)


def guarded_call(step: Callable[[], T], label: str) -> T:
    """``step()``, a call into a runtime, with unexpected exceptions turned into InternalError
    naming the version; pitstop errors (e.g. InvalidInput) pass through."""
    try:
        return step()
    except PitstopError:
        raise
    except Exception as exc:
        raise InternalError(f"{label} failed: {type(exc).__name__}: {exc}") from exc


class Pending:
    """A version's requests accepted and not yet finished (waiting or running), at most
    ``most``: :meth:`enter` raises Overloaded past that."""

    def __init__(self, most: int, label: str) -> None:
        self.count = 0
        self._most = most
        self._label = label

    def enter(self) -> None:
        if self.count >= self._most:
            raise Overloaded(
                f"{self._label}: {self.count} requests already queued (max {self._most})"
            )
        self.count += 1

    def leave(self) -> None:
        self.count -= 1


class DirectExecution:
    """One runtime call per request in the shared thread pool; at most ``max_pending`` requests
    of this version wait or run at once."""

    def __init__(self, predict: Predict, pool: Executor, max_pending: int, label: str) -> None:
        self._predict = predict
        self._pool = pool
        self._pending = Pending(max_pending, label)
        self._label = label

    @property
    def queued(self) -> int:
        return self._pending.count

    async def run(self, inputs: Arrays, deadline: float | None, priority: int) -> Executed:
        self._pending.enter()
        submitted = time.monotonic_ns()

        def work() -> tuple[dict[str, np.ndarray], int, int]:
            begin = time.monotonic_ns()
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(f"{self._label}: the request's deadline passed in the queue")
            produced = call_runtime(self._predict, inputs, self._label)
            return produced, begin, time.monotonic_ns()

        try:
            loop = asyncio.get_running_loop()
            produced, begin, end = await loop.run_in_executor(self._pool, work)
        finally:
            self._pending.leave()
        rows = next((int(a.shape[0]) for a in inputs.values() if a.ndim), 1)
        return Executed(produced, begin - submitted, end - begin, rows)

    async def close(self) -> None:
        return None
