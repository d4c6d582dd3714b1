"""At-least-once through real brokers (NATS JetStream, Redis Streams) and real ``pitstop stream``
processes: 10,000 messages through two consumers, one killed with SIGKILL under load and
started again → every message has exactly one answer or one dead letter (counted by id),
answers name the version, poison messages are dead-lettered with their error without holding
the rest up; SIGTERM finishes and acknowledges what is in flight and exits 0."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests import handler_models as hm
from tests import model_factory as mf
from tests.server import open_registry, wait_for
from tests.stream.brokers import StreamProcess, Streams, streams

pytestmark = pytest.mark.timeout(240)

MESSAGES = 10_000
GROUP = "pitstop-iris"


def iris_home(tmp_path: Path) -> tuple[Path, str]:
    home = tmp_path / "home"
    home.mkdir()
    with open_registry(home) as registry:
        pushed = registry.push(mf.make_onnx_package(tmp_path / "iris"), name="iris", actor="t")
        registry.set_alias("iris", "production", pushed.version.number, actor="t")
        return home, pushed.version.digest


def handler_home(tmp_path: Path, model: str, body: str) -> Path:
    """A PITSTOP_HOME whose ``model`` is a python handler (``body``) in production."""
    home = tmp_path / "home"
    home.mkdir()
    with open_registry(home) as registry:
        hm.push(registry, tmp_path / model, model, body, "production")
    return home


def bodies(count: int, rng: random.Random) -> tuple[list[bytes], dict[int, str]]:
    """V2 requests and records, with poison messages at random places (index → why)."""
    rows = mf.iris_rows(count).tolist()
    out: list[bytes] = []
    for i, row in enumerate(rows):
        if i % 2:
            tensor = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": row}
            out.append(orjson.dumps({"id": f"req-{i}", "inputs": [tensor]}))
        else:
            out.append(orjson.dumps({"input": row}))
    poison = {
        rng.randrange(count): "not JSON",
        rng.randrange(count): "petal",
        rng.randrange(count): "FP32",
    }
    for index, reason in poison.items():
        out[index] = {
            "not JSON": b"\xff\xfe garbage",
            "petal": orjson.dumps({"petal": 1.0}),
            "FP32": orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                              "shape": [1, 4], "data": ["a", "b", "c", "d"]}]}),
        }[reason]  # fmt: skip
    return out, poison


def test_every_message_gets_one_answer_or_one_dead_letter_through_a_kill(
    tmp_path: Path, where: Streams
) -> None:
    rng = random.Random(7)
    home, digest = iris_home(tmp_path)
    payloads, poison = bodies(MESSAGES, rng)
    options = ("--ack-wait", "2", "--batch-size", "32", "--in-flight", "4")
    consumers = [StreamProcess(home, "iris", where, *options) for _ in range(2)]
    try:
        for consumer in consumers:
            consumer.start()
        keys = where.publish(payloads[: MESSAGES // 2])
        # Killed at a random point while the backlog is being worked off.
        kill_at = rng.randrange(MESSAGES // 10, MESSAGES // 3)
        assert wait_for(lambda: where.delivered(GROUP) >= kill_at, 60)
        consumers[0].kill()
        keys += where.publish(payloads[MESSAGES // 2 :])
        time.sleep(0.5)
        consumers[0].start()  # the same group again: it takes over what the dead one held
        settled = lambda: len(where.answers()) + len(where.dead()) >= MESSAGES  # noqa: E731
        assert wait_for(settled, 120, interval=0.5), consumers[0].logs()[-2000:]
        assert wait_for(lambda: where.unacked(GROUP) == 0, 30)
        for consumer in consumers:
            assert consumer.stop() == 0, consumer.logs()[-2000:]
    finally:
        for consumer in consumers:
            consumer.kill()
    answers, dead = where.answers(), where.dead()
    answered = Counter(a.key for a in answers)
    dead_ids = Counter(d.key for d in dead)
    # Exactly one answer or one dead letter per message, by id: nothing lost, nothing twice.
    assert set(answered) | set(dead_ids) == set(keys)
    assert not set(answered) & set(dead_ids)
    assert max(answered.values()) == 1, [k for k, n in answered.items() if n > 1][:5]
    assert max(dead_ids.values()) == 1
    # The poison messages, and only they, are dead letters, each with its error.
    assert set(dead_ids) == {keys[i] for i in poison}
    for received in dead:
        index = keys.index(received.key)
        assert poison[index] in received.headers["Pitstop-Error"], received.headers
        assert received.body == payloads[index]  # the original payload
    # Answers name the version and digest; a V2 request's id is kept.
    sample = {a.key: a for a in answers}
    for index in (1, 2, MESSAGES - 1, MESSAGES - 2):
        if index in poison:
            continue
        answer = sample[keys[index]]
        assert answer.headers["Pitstop-Model-Version"] == "1"
        assert answer.headers["Pitstop-Model-Digest"] == digest
        body = orjson.loads(answer.body)
        assert body["model_version"] == "1"
        if index % 2:
            assert body["id"] == f"req-{index}"
            assert body["parameters"]["message_id"] == keys[index]
        else:
            assert body["message_id"] == keys[index]
            assert body["outputs"]["label"] in (0, 1, 2)


SLOW = "import time; time.sleep(0.25); return {'y': x.sum(axis=1).astype(np.float32)}"


def test_sigterm_finishes_and_acknowledges_what_is_in_flight(
    tmp_path: Path, where: Streams
) -> None:
    home = handler_home(tmp_path, "slow", SLOW)
    row = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    keys = where.publish([orjson.dumps(row)] * 400)
    options = ("--batch-size", "8", "--in-flight", "3", "--max-wait-ms", "0")
    consumer = StreamProcess(home, "slow", where, *options)
    try:
        consumer.start()
        assert wait_for(lambda: where.unacked("pitstop-slow") > 0, 30)
        time.sleep(0.3)
        assert consumer.stop() == 0, consumer.logs()[-3000:]
    finally:
        consumer.kill()
    answered = {a.key for a in where.answers()}
    assert where.unacked("pitstop-slow") == 0  # everything fetched was acknowledged
    assert where.delivered("pitstop-slow") == len(answered)  # ... and answered
    assert 0 < len(answered) < len(keys)  # it stopped fetching; the rest waits in the broker
    assert "every message in flight was answered and acknowledged" in consumer.logs()


FAILS_ON_MINUS_ONE = (
    "if (x == -1).any(): raise RuntimeError('minus one')\n"
    "        return {'y': x.sum(axis=1).astype(np.float32)}"
)


def test_a_runtime_failure_is_retried_then_dead_lettered_after_max_deliver(
    tmp_path: Path, where: Streams
) -> None:
    home = handler_home(tmp_path, "flaky", FAILS_ON_MINUS_ONE)

    def row(value: float) -> bytes:
        tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [value, 1, 1, 1]}
        return orjson.dumps({"inputs": [tensor]})

    keys = where.publish([row(1)] * 20 + [row(-1)] + [row(2)] * 20)
    options = ("--max-deliver", "3", "--backoff", "0.2", "--ack-wait", "5")
    consumer = StreamProcess(home, "flaky", where, *options)
    try:
        consumer.start()
        assert wait_for(lambda: where.count() >= len(keys), 30), consumer.logs()[-2000:]
        assert consumer.stop() == 0
    finally:
        consumer.kill()
    (dead,) = where.dead()
    assert dead.key == keys[20]
    assert dead.headers["Pitstop-Deliveries"] == "3"  # counted by the broker, retried twice
    assert dead.headers["Pitstop-Error-Kind"] == "internal"
    assert "minus one" in dead.headers["Pitstop-Error"]
    assert sorted(a.key for a in where.answers()) == sorted(keys[:20] + keys[21:])
    assert "again in 0.2 s" in consumer.logs()
    assert "again in 0.4 s" in consumer.logs()


def test_a_consumer_refuses_to_start_naming_what_is_missing(tmp_path: Path) -> None:
    import asyncio

    import nats
    import nats.js.api
    import redis

    home, _digest = iris_home(tmp_path)
    made = streams("nats")
    try:

        def refused(*args: str) -> str:
            consumer = StreamProcess(home, "iris", made, *args)
            with pytest.raises(RuntimeError) as caught:
                consumer.start()
            return str(caught.value)

        unknown = refused("--to", f"{made.to_url}.nowhere")  # no stream stores it
        assert "to: no JetStream stream stores" in unknown
        assert "pitstop stream exited 1" in unknown

        async def lax_durable() -> None:  # made by hand, with a max_deliver that drops
            client = await nats.connect("nats://127.0.0.1:4222")
            config = nats.js.api.ConsumerConfig(
                durable_name="lax", max_deliver=2, filter_subject=made.source_url.rsplit("/")[-1]
            )
            await client.jetstream().add_consumer(made.source_url.rsplit("/")[-1].split(".")[0]
                                                  + "_IN", config)  # fmt: skip
            await client.close()

        asyncio.run(lax_durable())
        assert "has max_deliver 2" in refused("--group", "lax")
        assert "--group" in refused("--group", "not.valid")
        assert "--ack-wait: Input should be greater than 0" in refused("--ack-wait", "-1")
        closed = refused("--from", "nats://127.0.0.1:1/x", "--to", "nats://127.0.0.1:1/y",
                         "--dead-letter", "nats://127.0.0.1:1/z")  # fmt: skip
        assert "cannot connect to NATS" in closed
    finally:
        made.teardown()
    keyed = streams("redis")
    try:
        client = redis.Redis.from_url("redis://127.0.0.1:6379")
        client.set(keyed.to_url.rsplit("/")[-1], "a string")
        consumer = StreamProcess(home, "iris", keyed)
        with pytest.raises(RuntimeError, match="holds a string, not a stream"):
            consumer.start()
        client.close()
    finally:
        keyed.teardown()
