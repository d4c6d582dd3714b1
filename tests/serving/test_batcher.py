"""The dynamic batcher: the pure batching decision as a table, then the Batcher itself."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pitstop.errors import DeadlineExceeded, InternalError, InvalidInput, Overloaded
from pitstop.registry.options import BatchingOptions
from pitstop.serving.batcher import Batcher, Queued, decide

A, B = ("a",), ("b",)


def q(rows: int, at: float, key: tuple = A, deadline: float | None = None) -> Queued:
    return Queued(rows=rows, key=key, enqueued=at, deadline=deadline)


OPTS = BatchingOptions(max_batch_size=8, max_queue_delay_microseconds=1000)
PREF = BatchingOptions(
    max_batch_size=8, max_queue_delay_microseconds=1000, preferred_batch_size=(4,)
)
NODELAY = BatchingOptions(max_batch_size=8)

DECISIONS = [
    # (what, queue, now, options, expired, take, wait)
    ("empty queue waits for an arrival", [], 0.0, OPTS, (), (), None),
    ("young partial batch waits out the delay", [q(1, 0.0)], 0.0004, OPTS, (), (), 0.0006),
    ("delay passed: send what there is", [q(1, 0.0), q(2, 0.0005)], 0.001, OPTS, (), (0, 1), None),
    ("full batch goes at once", [q(4, 0.0), q(4, 0.0)], 0.0, OPTS, (), (0, 1), None),
    ("no delay configured: go at once", [q(1, 0.0)], 0.0, NODELAY, (), (0,), None),
    ("stops at max_batch_size", [q(5, 0.0), q(4, 0.0), q(3, 0.0)], 0.0, OPTS, (), (0, 2), None),
    (
        "incompatible shapes wait their turn",
        [q(1, 0.0), q(1, 0.0, B), q(1, 0.0)],
        0.002,
        OPTS,
        (),
        (0, 2),
        None,
    ),
    ("oldest compatible group first", [q(1, 0.0, B), q(1, 0.0)], 0.002, OPTS, (), (0,), None),
    ("preferred size goes at once", [q(2, 0.0), q(2, 0.0), q(1, 0.0)], 0.0, PREF, (), (0, 1), None),
    (
        "expired requests are dropped, never taken",
        [q(1, 0.0, deadline=0.0005), q(1, 0.0)],
        0.002,
        OPTS,
        (0,),
        (1,),
        None,
    ),
    ("only expired: nothing to take", [q(1, 0.0, deadline=0.0001)], 0.001, OPTS, (0,), (), None),
]


@pytest.mark.parametrize(
    ("what", "queue", "now", "options", "expired", "take", "wait"),
    DECISIONS,
    ids=[d[0] for d in DECISIONS],
)
def test_decide(what, queue, now, options, expired, take, wait) -> None:
    decision = decide(queue, now, options)
    assert decision.expired == expired
    assert decision.take == take
    if wait is None:
        assert decision.wait_s is None
    else:
        assert decision.wait_s == pytest.approx(wait)


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"max_batch_size": -1}, "batching.max_batch_size"),
        ({"max_batch_size": 8, "nope": 1}, "batching.nope"),
        ({"max_batch_size": 8, "preferred_batch_size": [16]}, "preferred_batch_size"),
        ({"max_batch_size": 8, "max_queue_size": 0}, "bounded"),
        ({"max_batch_size": 8, "priority_levels": 2, "default_priority_level": 3}, "priority"),
        ({"max_batch_size": "8"}, "batching.max_batch_size"),
    ],
)
def test_invalid_batching_options_name_the_field(section: dict, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        BatchingOptions.parse(section)


def test_batching_options_accept_triton_and_mlserver_names() -> None:
    options = BatchingOptions.parse(
        {"max_batch_size": 32, "max_batch_time": 0.002, "preferred_batch_size": [8, 4]}
    )
    assert options is not None
    assert options.max_queue_delay_microseconds == 2000
    assert options.preferred_batch_size == (4, 8)
    assert BatchingOptions.parse({"max_batch_size": 0}) is None
    assert BatchingOptions.parse(None) is None


class Recorder:
    """A runtime stand-in: doubles ``x`` and records every batch it is called with."""

    def __init__(self, delay_s: float = 0.0, broken: bool = False) -> None:
        self.batches: list[int] = []
        self.seen: list[float] = []
        self.delay_s = delay_s
        self.broken = broken
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.gate.wait(5)
        x = inputs["x"]
        self.batches.append(len(x))
        self.seen.extend(x[:, 0].tolist())
        time.sleep(self.delay_s)
        y = x * 2
        return {"y": y[:-1] if self.broken else y}


def rows(value: float, n: int = 1, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.full((n, width), value, dtype=np.float32)}


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    with ThreadPoolExecutor(2) as executor:
        yield executor


async def test_concurrent_requests_share_runtime_calls(pool: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    recorder.gate.clear()  # hold the first call so the others queue up behind it
    batcher = Batcher(recorder, pool, BatchingOptions(max_batch_size=16), "m v1")
    calls = [batcher.run(rows(float(i)), None, 0) for i in range(10)]
    tasks = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(0.05)
    recorder.gate.set()
    results = await asyncio.gather(*tasks)
    for i, executed in enumerate(results):
        np.testing.assert_array_equal(executed.outputs["y"], np.full((1, 2), 2.0 * i))
    assert sum(recorder.batches) == 10
    assert len(recorder.batches) < 10
    assert sum(r.counts_execution for r in results) == len(recorder.batches)
    await batcher.close()


async def test_incompatible_shapes_are_not_batched_together(pool: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = Batcher(recorder, pool, BatchingOptions(max_batch_size=16), "m v1")
    narrow = [asyncio.ensure_future(batcher.run(rows(1.0), None, 0)) for _ in range(3)]
    wide = [asyncio.ensure_future(batcher.run(rows(1.0, width=3), None, 0)) for _ in range(3)]
    await asyncio.sleep(0.05)
    recorder.gate.set()
    for done in await asyncio.gather(*narrow):
        assert done.outputs["y"].shape == (1, 2)
    for done in await asyncio.gather(*wide):
        assert done.outputs["y"].shape == (1, 3)
    await batcher.close()


async def test_priority_one_runs_first(pool: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    recorder.gate.clear()
    options = BatchingOptions(max_batch_size=1, priority_levels=2, default_priority_level=2)
    batcher = Batcher(recorder, pool, options, "m v1")
    blocker = asyncio.ensure_future(batcher.run(rows(0.0), None, 0))
    await asyncio.sleep(0.02)
    low = asyncio.ensure_future(batcher.run(rows(1.0), None, 2))
    high = asyncio.ensure_future(batcher.run(rows(2.0), None, 1))
    await asyncio.sleep(0.02)
    recorder.gate.set()
    await asyncio.gather(blocker, low, high)
    assert recorder.seen == [0.0, 2.0, 1.0]
    await batcher.close()


async def test_full_queue_refuses_at_once(pool: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = Batcher(recorder, pool, BatchingOptions(max_batch_size=1, max_queue_size=2), "m v1")
    running = asyncio.ensure_future(batcher.run(rows(0.0), None, 0))
    await asyncio.sleep(0.02)  # taken by the drain task: no longer queued
    queued = [asyncio.ensure_future(batcher.run(rows(1.0), None, 0)) for _ in range(2)]
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(Overloaded, match="queue full"):
        await batcher.run(rows(9.0), None, 0)
    assert time.monotonic() - started < 0.05
    recorder.gate.set()
    await asyncio.gather(running, *queued)
    assert 9.0 not in recorder.seen
    await batcher.close()


async def test_expired_requests_are_never_executed(pool: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    recorder.gate.clear()
    batcher = Batcher(recorder, pool, BatchingOptions(max_batch_size=1), "m v1")
    blocker = asyncio.ensure_future(batcher.run(rows(0.0), None, 0))
    await asyncio.sleep(0.02)
    with pytest.raises(DeadlineExceeded, match="deadline"):
        await batcher.run(rows(7.0), time.monotonic() + 0.05, 0)
    recorder.gate.set()
    await blocker
    await asyncio.sleep(0.05)
    assert 7.0 not in recorder.seen
    await batcher.close()


async def test_broken_batch_size_contract_fails_every_request(pool: ThreadPoolExecutor) -> None:
    recorder = Recorder(broken=True)
    batcher = Batcher(recorder, pool, BatchingOptions(max_batch_size=8), "m v1")
    with pytest.raises(InternalError, match="batch-size contract"):
        await batcher.run(rows(1.0, n=3), None, 0)
    await batcher.close()


async def test_too_large_and_ragged_requests_are_invalid(pool: ThreadPoolExecutor) -> None:
    batcher = Batcher(Recorder(), pool, BatchingOptions(max_batch_size=4), "m v1")
    with pytest.raises(InvalidInput, match="max_batch_size 4"):
        await batcher.run(rows(1.0, n=5), None, 0)
    ragged = {"x": np.zeros((2, 2), np.float32), "z": np.zeros((3, 2), np.float32)}
    with pytest.raises(InvalidInput, match="same first dimension"):
        await batcher.run(ragged, None, 0)
    await batcher.close()
