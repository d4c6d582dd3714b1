"""Decoupled execution: a version whose model answers one request with any number of responses
(Triton's decoupled transaction policy; a python handler whose ``predict`` is a generator).

Its responses are pulled one at a time: each ``next()`` of the runtime's iterator runs in the
inference thread pool, so the model computes a response only when the caller is ready for it
(a slow reader slows the model down instead of filling memory), and no thread waits on a
reader. When the caller stops early (it went away, or the deadline passed) the iterator is
closed in the pool, so the handler's ``finally`` runs. Requests of one version are bounded
like :class:`~pitstop.serving.execution.DirectExecution`'s (Overloaded past the bound).

Unary inference (``run``) is refused: one response cannot stand for a decoupled model's
answers, as in Triton, where only the streaming RPC serves such a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Executor, Future
from typing import cast

import numpy as np

from pitstop.errors import (
    DeadlineExceeded,
    Unavailable,
    Unsupported,
)
from pitstop.protocol.tensor import InferRequest
from pitstop.serving.call import Progress
from pitstop.serving.conformance import check_inputs, check_requested, select_outputs
from pitstop.serving.execution import Arrays, Executed, Pending, guarded_call

Responses = Callable[[Arrays], Iterator[dict[str, np.ndarray]]]

_DONE = object()


class DecoupledExecution:
    """Runs one decoupled version's requests: :meth:`stream` yields each response's outputs."""

    def __init__(self, responses: Responses, pool: Executor, max_pending: int, label: str) -> None:
        self._responses = responses
        self._pool = pool
        self._pending = Pending(max_pending, label)
        self._label = label

    @property
    def queued(self) -> int:
        return self._pending.count

    async def run(self, inputs: Arrays, deadline: float | None, priority: int) -> Executed:
        raise Unsupported(
            f"{self._label} is decoupled (it may answer one request with several responses), "
            "so it serves streams only: gRPC ModelStreamInfer, or HTTP generate_stream "
            "(POST /v2/models/<model>/generate_stream)"
        )

    async def stream(
        self, inputs: Arrays, deadline: float | None
    ) -> AsyncGenerator[tuple[dict[str, np.ndarray], Executed], None]:
        """Each response's outputs, with the time it took (queue_ns is the wait for a thread
        before the first one). Raises Overloaded when the bound is reached, DeadlineExceeded
        when ``deadline`` passes between responses, InternalError for a failing handler."""
        self._pending.enter()
        submitted = time.monotonic_ns()
        iterator: Iterator[dict[str, np.ndarray]] | None = None
        step: Future[object] | None = None
        try:
            step = self._pool.submit(self._start, inputs)
            iterator = cast(Iterator[dict[str, np.ndarray]], await asyncio.wrap_future(step))
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceeded(
                        f"{self._label}: the request's deadline passed between responses"
                    )
                begin = time.monotonic_ns()
                step = self._pool.submit(self._next, iterator)
                produced = await asyncio.wrap_future(step)
                if produced is _DONE:
                    return
                end = time.monotonic_ns()
                outputs = cast(dict[str, np.ndarray], produced)
                yield outputs, Executed(outputs, begin - submitted, end - begin, 1)
                submitted = time.monotonic_ns()
        finally:
            self._pending.leave()
            self._close_after(step, iterator)

    def _close_after(
        self, step: Future[object] | None, iterator: Iterator[dict[str, np.ndarray]] | None
    ) -> None:
        """Close the iterator in the pool once no ``next()`` of it runs (a caller cancelled
        mid-step leaves that step running; closing meanwhile would fail), never waiting here:
        a generator's ``finally`` may block."""

        def close(_: object = None) -> None:
            running = iterator if iterator is not None else _started(step)
            if running is not None:
                with contextlib.suppress(RuntimeError):  # the pool is shut down: nothing to do
                    self._pool.submit(_close, running)

        if step is not None and not step.done():
            step.add_done_callback(close)
        else:
            close()

    def _start(self, inputs: Arrays) -> object:
        return guarded_call(lambda: iter(self._responses(inputs)), self._label)

    def _next(self, iterator: Iterator[dict[str, np.ndarray]]) -> object:
        return guarded_call(lambda: next(iterator, _DONE), self._label)

    async def close(self) -> None:
        return None


def _started(step: Future[object] | None) -> Iterator[dict[str, np.ndarray]] | None:
    """The iterator a finished ``_start`` step made (a cancelled caller never received it)."""
    if step is None or step.cancelled() or step.exception() is not None:
        return None
    made = step.result()
    return made if isinstance(made, Iterator) else None


def _close(iterator: Iterator[dict[str, np.ndarray]]) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


async def respond(
    run: Progress, request: InferRequest, deadline: float | None
) -> AsyncGenerator[dict[str, np.ndarray], None]:
    """The outputs (selected as the request asks) of each response of a decoupled version to
    ``request``: checked against the signature first, as the unary path does; ``run`` notes the
    inputs and the time spent (waits and computation summed over the responses)."""
    loaded = run.loaded
    metadata = loaded.metadata
    execution = loaded.execution
    if metadata is None or not isinstance(execution, DecoupledExecution):
        raise Unavailable(f"{loaded.key} is {loaded.state.value}")
    inputs = run.inputs = check_inputs(request, metadata.inputs)
    check_requested(request.outputs, metadata.outputs)
    run.submitted_wall_ns = time.time_ns()
    queue_ns = compute_ns = 0
    async for produced, executed in execution.stream(inputs, deadline):
        queue_ns += executed.queue_ns
        compute_ns += executed.compute_ns
        run.executed = Executed(produced, queue_ns, compute_ns, 1)
        yield select_outputs(produced, request.outputs, metadata.outputs)
