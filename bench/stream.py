"""Streaming throughput and latency: ``pitstop stream`` through NATS JetStream and Redis Streams
against the server's HTTP JSON path, on the same model (the tiny ONNX classifier), in one run.

    .venv/bin/python bench/stream.py [--messages 30000] [--duration 8] [--rate 300]

1. HTTP baseline: ``pitstop serve`` (one process), wrk with 64 connections posting a one-row
   V2 JSON request for ``--duration`` s → requests/s; and an open loop at ``--rate`` requests/s
   → p50/p99 latency.
2. Throughput per broker: ``--messages`` one-row V2 JSON messages waiting in the source, then one
   ``pitstop stream`` process works them off; the rate is taken between 10% and 90% answered
   (start-up and the tail cancel out). Batching on (the defaults: 64 per batch, 5 ms wait,
   4 in flight) and off (``--batch-size 1 --max-wait-ms 0 --in-flight 64``: a fetch and a
   model call per message, as many in flight as wrk's connections). Ratio: stream/HTTP.
3. Latency per broker at ``--rate`` messages/s for ``--duration`` s (paced, one at a time):
   end to end, from the publisher's clock before publishing to the broker's timestamp of the
   stored answer (same machine, same clock), p50/p99, batching on and off.

One consumer process and one server process: each uses one core for Python, the broker and the
load generator the other (2 cores here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from bench.loadgen import open_loop  # noqa: E402
from bench.throughput import json_body, pitstop_server, wrk  # noqa: E402
from tests.server import open_registry, wait_for  # noqa: E402
from tests.stream.brokers import (  # noqa: E402
    NATS_URL,
    NatsStreams,
    StreamProcess,
    Streams,
    streams,
)

MODEL = "tiny"
BATCHING_OFF = ("--batch-size", "1", "--max-wait-ms", "0", "--in-flight", "64")


def message(sent_ns: int) -> bytes:
    row = models.rows(1)[0].round(4).tolist()
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, models.FEATURES], "data": row}
    return orjson.dumps({"id": str(sent_ns), "inputs": [tensor]})


def steady_rate(count: Callable[[], int], total: int, timeout: float = 300) -> float:
    """Messages/s between 10% and 90% of ``total`` answered, by polling ``count``."""
    marks: dict[float, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = count()
        now = time.monotonic()
        for share in (0.1, 0.9):
            if share not in marks and done >= share * total:
                marks[share] = now
        if 0.9 in marks:
            return 0.8 * total / (marks[0.9] - marks[0.1])
        time.sleep(0.05)
    raise TimeoutError(f"{count()} of {total} answered in {timeout} s")


def throughput(home: Path, broker: str, messages: int, *options: str) -> float:
    where = streams(broker)
    try:
        body = message(0)
        where.publish([body] * messages)
        consumer = StreamProcess(home, MODEL, where, *options, env={"PITSTOP_LOG_LEVEL": "info"})
        consumer.start()
        try:
            return steady_rate(where.count, messages)
        finally:
            consumer.stop()
    finally:
        where.teardown()


def paced(where: Streams, rate: float, seconds: float) -> int:
    """Publish one message every 1/rate s for ``seconds``; each carries its send time."""
    total = int(rate * seconds)
    if isinstance(where, NatsStreams):
        import nats

        async def send() -> None:
            client = await nats.connect(NATS_URL)
            js = client.jetstream()
            start = time.monotonic()
            for i in range(total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await js.publish(where.source, message(time.time_ns()))
            await client.close()

        asyncio.run(send())
        return total
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379")
    start = time.monotonic()
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.xadd(where.source, {"data": message(time.time_ns())})
    client.close()
    return total


def latency(home: Path, broker: str, rate: float, seconds: float, *options: str) -> list[float]:
    where = streams(broker)
    try:
        consumer = StreamProcess(home, MODEL, where, *options, env={"PITSTOP_LOG_LEVEL": "info"})
        consumer.start()
        try:
            where.publish([message(0)] * 200)  # warm up the path (not measured)
            assert wait_for(lambda: where.count() >= 200, 30)
            total = paced(where, rate, seconds) + 200
            assert wait_for(lambda: where.count() >= total, 60)
        finally:
            consumer.stop()
        out = []
        for answer in where.answers():
            sent = int(orjson.loads(answer.body)["id"])
            if sent > 0:
                out.append((answer.stored_s - sent / 1e9) * 1000)
        return sorted(out)
    finally:
        where.teardown()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--brokers", default="nats,redis")
    args = parser.parse_args()
    brokers = args.brokers.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        home = folder / "home"
        home.mkdir()
        with open_registry(home) as registry:
            package = models.tiny_onnx_package(folder / "tiny", models.tiny_classifier())
            pushed = registry.push(package, name=MODEL, actor="bench")
            registry.set_alias(MODEL, "production", pushed.version.number, actor="bench")
        body = json_body(folder)
        with pitstop_server(home) as server:
            url = f"{server.url}/v2/models/{MODEL}/infer"
            wrk(url, body, 64, 2)  # warm-up
            http = wrk(url, body, 64, args.duration)
            path = f"/v2/models/{MODEL}/infer"
            opened = asyncio.run(
                open_loop(server.port, path, body.read_bytes(), args.rate, args.duration)
            )
        print(f"HTTP JSON c64: {http.rps:,.0f} req/s; open loop {args.rate:.0f}/s: "
              f"p50 {opened.p(50):.2f} ms, p99 {opened.p(99):.2f} ms")  # fmt: skip
        for broker in brokers:
            on = throughput(home, broker, args.messages)
            off = throughput(home, broker, args.messages, *BATCHING_OFF)
            print(f"{broker}: batching on {on:,.0f} msg/s ({on / http.rps:.2f} of HTTP), "
                  f"off {off:,.0f} msg/s ({off / http.rps:.2f} of HTTP)")  # fmt: skip
            for label, options in (("on", ()), ("off", BATCHING_OFF)):
                ms = latency(home, broker, args.rate, args.duration, *options)
                print(f"{broker}: {args.rate:.0f} msg/s, batching {label}: end to end "
                      f"p50 {pct(ms, 50):.2f} ms, p99 {pct(ms, 99):.2f} ms "
                      f"({len(ms)} messages)")  # fmt: skip
        sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
