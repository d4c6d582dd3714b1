"""A small closed-loop HTTP load generator for reliability tests and benchmarks.

Each worker thread sends one request at a time and records when it started and ended, the status
(or the connection error) and the ``pitstop-model-version`` header. Loops are bounded by a request
count and stop early when asked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    status: int | None
    """HTTP status, or None when the request got no response."""
    version: str | None
    error: str | None = None
    """The transport error for requests without a response."""

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class LoadLoop:
    url: str
    body: dict[str, Any]
    workers: int = 4
    max_requests: int = 100_000
    """Upper bound on requests over all workers."""
    timeout_s: float = 30.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoadLoop:
        budget = max(1, self.max_requests // self.workers)
        for _ in range(self.workers):
            thread = threading.Thread(target=self._run, args=(budget,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, budget: int) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            for _ in range(budget):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                try:
                    response = client.post(self.url, json=self.body)
                    outcome = Outcome(
                        started,
                        time.monotonic(),
                        response.status_code,
                        response.headers.get("pitstop-model-version"),
                        None if response.status_code == 200 else response.text[:200],
                    )
                except httpx.TransportError as exc:
                    outcome = Outcome(started, time.monotonic(), None, None, type(exc).__name__)
                with self._lock:
                    self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def stop(self, join_timeout_s: float = 30.0) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(join_timeout_s)
        return self.snapshot()

    def __enter__(self) -> LoadLoop:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def failures(outcomes: Sequence[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status != 200]


@dataclass(frozen=True)
class OpenLoop:
    """What an open-loop run measured: latencies from each request's *scheduled* send time
    (so a stalled server is charged for the requests that queued behind it)."""

    latencies_ms: list[float]
    failed: int
    offered_rps: float

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def read_response(reader: Any) -> bytes:
    """Read one HTTP/1.1 response with a Content-Length from an asyncio stream; its status line."""
    status: bytes = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def open_loop(
    port: int, path: str, body: bytes, rate: float, seconds: float, connections: int = 32
) -> OpenLoop:
    """POST ``body`` to ``path`` on 127.0.0.1:``port`` at Poisson arrivals of ``rate`` per
    second for ``seconds``, over up to ``connections`` keep-alive HTTP/1.1 connections. A request
    whose turn comes while every connection is busy waits for one, and that wait counts."""
    import asyncio
    import random

    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    failed = 0

    async def send(scheduled: float) -> None:
        nonlocal failed
        reader, writer = await pool.get()
        try:
            writer.write(head)
            status = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            failed += 1  # a broken connection: count it and replace the connection
            writer.close()
            pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
            return
        latencies.append((time.perf_counter() - scheduled) * 1e3)
        if b" 200 " not in status:
            failed += 1
        pool.put_nowait((reader, writer))

    arrivals = random.Random(7)
    tasks = []
    start = time.perf_counter()
    scheduled = start
    while scheduled - start < seconds:
        scheduled += arrivals.expovariate(rate)
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(scheduled)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        _reader, writer = pool.get_nowait()
        writer.close()
    return OpenLoop(latencies, failed, len(tasks) / seconds)
