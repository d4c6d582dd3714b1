"""DecoupledExecution at its seam: a generator stands in for the runtime, a real thread pool runs
it. Responses are pulled one at a time; the generator is closed however the caller stops."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pitstop.errors import DeadlineExceeded, InternalError, Overloaded, Unsupported
from pitstop.serving.decoupled import DecoupledExecution
from pitstop.serving.execution import Arrays

X = {"x": np.zeros((1, 1), dtype=np.float32)}


class Counting:
    """A responses() that yields ``n`` responses (pausing ``pause_s`` before each) and notes
    how far it got and whether it was closed."""

    def __init__(self, n: int, pause_s: float = 0.0, fail_at: int | None = None) -> None:
        self.n, self.pause_s, self.fail_at = n, pause_s, fail_at
        self.produced = 0
        self.closed = threading.Event()

    def __call__(self, inputs: Arrays) -> Iterator[dict[str, np.ndarray]]:
        try:
            for i in range(self.n):
                time.sleep(self.pause_s)
                if i == self.fail_at:
                    raise ValueError(f"response {i} failed")
                self.produced += 1
                yield {"y": np.array([i])}
        finally:
            self.closed.set()


async def collect(execution: DecoupledExecution, deadline: float | None = None) -> list[int]:
    return [int(out["y"][0]) async for out, _ in execution.stream(X, deadline)]


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as executor:
        yield executor


def test_every_response_in_order_then_closed(pool: ThreadPoolExecutor) -> None:
    source = Counting(5)
    execution = DecoupledExecution(source, pool, 4, "m v1")
    assert asyncio.run(collect(execution)) == [0, 1, 2, 3, 4]
    assert source.closed.wait(2)
    assert execution.queued == 0


def test_responses_are_pulled_only_as_the_caller_takes_them(pool: ThreadPoolExecutor) -> None:
    source = Counting(1000)
    execution = DecoupledExecution(source, pool, 4, "m v1")

    async def take_two() -> None:
        stream = execution.stream(X, None)
        await anext(stream)
        await anext(stream)
        await asyncio.sleep(0.1)  # a slow reader: the model waits, it does not run ahead
        assert source.produced == 2
        await stream.aclose()

    asyncio.run(take_two())
    assert source.closed.wait(2)
    assert execution.queued == 0


def test_a_caller_cancelled_mid_response_closes_the_generator_after_that_step(
    pool: ThreadPoolExecutor,
) -> None:
    source = Counting(1000, pause_s=0.2)
    execution = DecoupledExecution(source, pool, 4, "m v1")

    async def cancel_mid_step() -> None:
        task = asyncio.ensure_future(collect(execution))
        await asyncio.sleep(0.3)  # inside the second next()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_mid_step())
    assert source.closed.wait(2)  # closed once the running step returned, not during it
    assert source.produced <= 3


@pytest.mark.parametrize(
    ("source", "deadline_in_s", "error", "message"),
    [
        (Counting(10, fail_at=2), None, InternalError, "m v1 failed: ValueError: response 2"),
        (Counting(10, pause_s=0.05), 0.12, DeadlineExceeded, "deadline passed between"),
    ],
)
def test_failures_end_the_stream_with_a_pitstop_error(
    pool: ThreadPoolExecutor,
    source: Counting,
    deadline_in_s: float | None,
    error: type[Exception],
    message: str,
) -> None:
    execution = DecoupledExecution(source, pool, 4, "m v1")
    got: list[int] = []

    async def run() -> None:
        deadline = None if deadline_in_s is None else time.monotonic() + deadline_in_s
        async for out, _ in execution.stream(X, deadline):
            got.append(int(out["y"][0]))

    with pytest.raises(error, match=message):
        asyncio.run(run())
    assert 0 < len(got) < 10
    assert source.closed.wait(2)


def test_the_bound_and_the_unary_refusal(pool: ThreadPoolExecutor) -> None:
    execution = DecoupledExecution(Counting(10), pool, 1, "m v1")

    async def two_at_once() -> None:
        first = execution.stream(X, None)
        await anext(first)
        with pytest.raises(Overloaded, match="1 requests already queued"):
            await anext(execution.stream(X, None))
        await first.aclose()
        with pytest.raises(Unsupported, match="ModelStreamInfer"):
            await execution.run(X, None, 0)

    asyncio.run(two_at_once())
