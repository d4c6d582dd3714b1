"""The real brokers of the stream tests (NATS JetStream at 127.0.0.1:4222, Redis at :6379): each
test makes its own uniquely named streams and deletes them after; a ``pitstop stream`` process
stopped by its PID. Also used by bench/stream.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.js.api
import redis

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379"


@dataclass(frozen=True)
class Received:
    """An answer or a dead letter as a consumer of the destination sees it."""

    key: str
    """Pitstop-Message-Id."""
    headers: Mapping[str, str]
    body: bytes
    stored_s: float
    """When the broker stored it (wall clock, seconds)."""


class Streams:
    """Three streams of one test on one broker: the source, the answers, the dead letters."""

    broker: str
    source_url: str
    to_url: str
    dead_url: str

    def setup(self) -> None: ...
    def publish(self, bodies: Sequence[bytes]) -> list[str]:
        """Publish in order; the message ids pitstop will report."""
        raise NotImplementedError

    def answers(self) -> list[Received]:
        raise NotImplementedError

    def dead(self) -> list[Received]:
        raise NotImplementedError

    def unacked(self, group: str) -> int:
        raise NotImplementedError

    def count(self) -> int:
        """Answers and dead letters stored so far (one cheap call)."""
        raise NotImplementedError

    def delivered(self, group: str) -> int:
        """Messages the group has received (each once, however often delivered)."""
        raise NotImplementedError

    def teardown(self) -> None: ...


class NatsStreams(Streams):
    broker = "nats"

    def __init__(self) -> None:
        self.tag = "pt" + uuid.uuid4().hex[:10]
        self.source = f"{self.tag}.in"
        self.to, self.dead_subject = f"{self.tag}.out", f"{self.tag}.out.dead"
        self.source_url = f"{NATS_URL}/{self.source}"
        self.to_url = f"{NATS_URL}/{self.to}"
        self.dead_url = f"{NATS_URL}/{self.dead_subject}"
        self._loop = asyncio.new_event_loop()

    def _run(self, coroutine):  # type: ignore[no-untyped-def]
        return self._loop.run_until_complete(coroutine)

    def setup(self) -> None:
        async def create() -> None:
            client = await nats.connect(NATS_URL)
            js = client.jetstream()
            await js.add_stream(name=f"{self.tag}_IN", subjects=[self.source])
            await js.add_stream(name=f"{self.tag}_OUT", subjects=[self.to, self.dead_subject])
            await client.close()

        self._run(create())

    def publish(self, bodies: Sequence[bytes]) -> list[str]:
        start = getattr(self, "_published", 0)
        keys = [f"{self.tag}-{start + i}" for i in range(len(bodies))]
        self._published = start + len(bodies)

        async def send() -> None:
            client = await nats.connect(NATS_URL)
            js = client.jetstream()
            for first in range(0, len(bodies), 500):
                pending = [
                    await js.publish_async(self.source, body, headers={"Nats-Msg-Id": key})
                    for key, body in zip(
                        keys[first : first + 500], bodies[first : first + 500], strict=True
                    )
                ]
                await asyncio.gather(*pending)
            await client.close()

        self._run(send())
        return keys

    def _read(self, subject: str) -> list[Received]:
        async def read() -> list[Received]:
            client = await nats.connect(NATS_URL)
            js = client.jetstream()
            config = nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.NONE)
            sub = await js.pull_subscribe(subject, durable=None, config=config)
            found: list[Received] = []
            while True:
                try:
                    messages = await sub.fetch(1000, timeout=0.5)
                except (TimeoutError, nats.errors.TimeoutError):
                    break
                for msg in messages:
                    headers = msg.headers or {}
                    stored = msg.metadata.timestamp.timestamp()
                    found.append(Received(headers.get("Pitstop-Message-Id", ""), headers,
                                          msg.data, stored))  # fmt: skip
            await sub.unsubscribe()
            await client.close()
            return found

        return self._run(read())  # type: ignore[no-any-return]

    def answers(self) -> list[Received]:
        return self._read(self.to)

    def dead(self) -> list[Received]:
        return self._read(self.dead_subject)

    def _consumer(self, group: str) -> nats.js.api.ConsumerInfo:
        async def info() -> nats.js.api.ConsumerInfo:
            client = await nats.connect(NATS_URL)
            found = await client.jetstream().consumer_info(f"{self.tag}_IN", group)
            await client.close()
            return found

        return self._run(info())  # type: ignore[no-any-return]

    def unacked(self, group: str) -> int:
        return int(self._consumer(group).num_ack_pending or 0)

    def count(self) -> int:
        async def info() -> int:
            client = await nats.connect(NATS_URL)
            found = await client.jetstream().stream_info(f"{self.tag}_OUT")
            await client.close()
            return int(found.state.messages)

        return self._run(info())  # type: ignore[no-any-return]

    def delivered(self, group: str) -> int:
        info = self._consumer(group)
        return int(info.delivered.stream_seq if info.delivered else 0)

    def teardown(self) -> None:
        async def delete() -> None:
            client = await nats.connect(NATS_URL)
            js = client.jetstream()
            for name in (f"{self.tag}_IN", f"{self.tag}_OUT"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(name)
            await client.close()

        self._run(delete())
        self._loop.close()


class RedisStreams(Streams):
    broker = "redis"

    def __init__(self) -> None:
        self.tag = "pt" + uuid.uuid4().hex[:10]
        self.source, self.to, self.dead_key = (
            f"{self.tag}:in",
            f"{self.tag}:out",
            f"{self.tag}:dead",
        )
        self.source_url = f"{REDIS_URL}/{self.source}"
        self.to_url = f"{REDIS_URL}/{self.to}"
        self.dead_url = f"{REDIS_URL}/{self.dead_key}"
        self.client = redis.Redis.from_url(REDIS_URL)

    def publish(self, bodies: Sequence[bytes]) -> list[str]:
        keys: list[str] = []
        for first in range(0, len(bodies), 1000):
            pipe = self.client.pipeline(transaction=False)
            for body in bodies[first : first + 1000]:
                pipe.xadd(self.source, {"data": body})
            keys += [key.decode() for key in pipe.execute()]
        return keys

    def _read(self, key: str) -> list[Received]:
        found = []
        for entry_id, fields in self.client.xrange(key):
            headers = {k.decode(): v.decode() for k, v in fields.items() if k != b"data"}
            stored = int(entry_id.decode().split("-")[0]) / 1000
            found.append(Received(headers.get("Pitstop-Message-Id", ""), headers,
                                  fields.get(b"data", b""), stored))  # fmt: skip
        return found

    def answers(self) -> list[Received]:
        return self._read(self.to)

    def dead(self) -> list[Received]:
        return self._read(self.dead_key)

    def _group(self, group: str) -> dict[str, object]:
        (found,) = [g for g in self.client.xinfo_groups(self.source) if g["name"].decode() == group]
        return found  # type: ignore[no-any-return]

    def unacked(self, group: str) -> int:
        return int(self._group(group)["pending"])  # type: ignore[call-overload]

    def count(self) -> int:
        return int(self.client.xlen(self.to)) + int(self.client.xlen(self.dead_key))

    def delivered(self, group: str) -> int:
        return int(self._group(group)["entries-read"] or 0)  # type: ignore[call-overload]

    def teardown(self) -> None:
        self.client.delete(self.source, self.to, self.dead_key)
        self.client.close()


def streams(broker: str) -> Streams:
    made: Streams = NatsStreams() if broker == "nats" else RedisStreams()
    made.setup()
    return made


class StreamProcess:
    """``python -m pitstop stream MODEL --from … --to …`` with its own log, stopped by PID."""

    def __init__(
        self,
        home: Path,
        model: str,
        where: Streams,
        *args: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = [
            *(sys.executable, "-m", "pitstop", "stream", model),
            *("--from", where.source_url, "--to", where.to_url, "--dead-letter", where.dead_url),
            *args,
        ]
        self.env = {**os.environ, "PITSTOP_HOME": str(home), "PITSTOP_WATCH_INTERVAL_S": "0.2",
                    "PITSTOP_DRIFT_ENABLED": "false", **(env or {})}  # fmt: skip
        self.log_path = home / f"stream-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> StreamProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pitstop stream exited {self.process.returncode}:\n"
                                   f"{self.logs()}")  # fmt: skip
            if "consuming;" in self.logs():
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"pitstop stream did not start:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        os.kill(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
