"""The stream consumer over a real Engine (SQLite registry, python-handler models), with the
broker faked at its seam: grouping into model calls, answers naming the version, poison
messages dead-lettered alone, runtime failures retried with back-off then dead-lettered, an
alias flip between batches, holding while the model cannot serve, and a stop that settles
everything in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pitstop.engine import Engine
from pitstop.monitoring.streams import Outcome, StreamSeries
from pitstop.monitoring.tally import Tally
from pitstop.registry import Registry
from pitstop.settings import Settings, StreamSettings
from pitstop.stream.consumer import Consumer
from tests import handler_models as hm
from tests.stream.fakes import FakeBroker, delivery

pytestmark = pytest.mark.timeout(60)

# y = sum of the row; a row holding -1 makes the runtime raise; -2 sleeps 0.3 s.
HANDLER = (
    "if (x == -1).any(): raise RuntimeError('minus one')\n"
    "        if (x == -2).any():\n"
    "            import time; time.sleep(0.3)\n"
    "        return {'y': x.sum(axis=1).astype(np.float32)}"
)
SHIFTED = "return {'y': (x.sum(axis=1) + 100).astype(np.float32)}"


def v2(*rows: list[float]) -> dict[str, Any]:
    flat = [v for row in rows for v in row]
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(rows), 4], "data": flat}]}


async def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"not met in time: {condition}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts") as reg:
        hm.push(reg, tmp_path / "v1", "score", HANDLER, "production")
        hm.push(reg, tmp_path / "v2", "score", SHIFTED)
    settings = Settings(home=tmp_path, warmup_runs=0, watch_interval_s=0.05, drift_enabled=False)
    async with Engine(settings) as started:
        await until(started.dataplane.ready)
        yield started


class Running:
    def __init__(self, engine: Engine, broker: FakeBroker, **options: Any) -> None:
        fields = {"model": "score", "from": "nats://h:1/in", "to": "nats://h:1/out", **options}
        self.spec = StreamSettings.model_validate(fields)
        self.series = StreamSeries("in", "score", Tally())
        self.consumer = Consumer(self.spec, engine.dataplane, broker, self.series)
        self.broker = broker

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.consumer.run())
        return self

    async def settled(self, messages: int) -> None:
        broker = self.broker
        await until(lambda: len(broker.answers) + len(broker.dead) >= messages)

    async def __aexit__(self, *_exc: object) -> None:
        self.consumer.stop()
        await asyncio.wait_for(self.task, 10)


async def test_messages_are_scored_in_batches_and_answers_name_the_version(engine: Engine) -> None:
    broker = FakeBroker()
    broker.add(*(delivery(f"m{i}", v2([i, 1, 1, 1]), {"trace": str(i)}) for i in range(40)))
    broker.add(*(delivery(f"r{i}", {"a": i, "b": 0, "c": 0, "d": 1}) for i in range(10)))
    broker.add(delivery("two-rows", v2([1, 1, 1, 1], [2, 2, 2, 2])))
    async with Running(engine, broker, batch_size=64, max_wait_ms=50) as running:
        await running.settled(51)
    assert broker.dead == []
    first = broker.answer_of("m7")
    assert first["model_name"] == "score"
    assert first["model_version"] == "1"
    assert first["id"] == "m7"
    assert first["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1], "data": [10.0]}]
    params = first["parameters"]
    assert isinstance(params, dict)
    assert params["message_id"] == "m7"
    assert str(params["model_digest"]).startswith("sha256:")
    record = broker.answer_of("r3")
    assert record["outputs"] == {"y": 4.0}
    assert record["model_version"] == "1"
    assert broker.answer_of("two-rows")["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2], "data": [4.0, 8.0]}
    ]
    (published,) = [p for p in broker.answers if p.delivery.id == "m7"]
    assert published.headers["trace"] == "7"
    assert published.headers["Pitstop-Model-Version"] == "1"
    assert published.headers["Pitstop-Message-Id"] == "m7"
    (stats,) = engine.dataplane.model_statistics("score", None)
    assert stats.inference_count == 52
    assert stats.execution_count < 10  # batched: far fewer model calls than messages
    assert running.series.counts()[Outcome.ANSWERED] == 51
    assert running.series.processing.count == 51


async def test_poison_messages_are_dead_lettered_alone(engine: Engine) -> None:
    broker = FakeBroker()
    good = [delivery(f"g{i}", v2([1, 2, 3, 4])) for i in range(20)]
    broker.add(*good[:10])
    broker.add(delivery("not-json", b"{nope"))
    broker.add(
        delivery(
            "wrong-input",
            {"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        )
    )
    broker.add(delivery("short-row", v2([1, 2, 3])))  # three values where four are declared
    broker.add(delivery("text", {"a": "x", "b": 1, "c": 1, "d": 1}))
    broker.add(delivery("huge", b" " * 2000))
    broker.add(*good[10:])
    async with Running(engine, broker, batch_size=64, max_wait_ms=20, max_message_bytes=1000):
        await until(lambda: len(broker.answers) + len(broker.dead) >= 25)
    assert sorted(p.delivery.id for p in broker.answers) == sorted(d.id for d in good)
    errors = {p.delivery.id: p.headers["Pitstop-Error"] for p in broker.dead}
    assert set(errors) == {"not-json", "wrong-input", "short-row", "text", "huge"}
    assert "not JSON" in errors["not-json"]
    assert "'z'" in errors["wrong-input"] or "x" in errors["wrong-input"]
    assert "'a'" in errors["text"]
    assert "max_message_bytes" in errors["huge"]
    dead = broker.dead_of("not-json")
    assert dead.body == b"{nope"  # the original payload, as it came
    assert dead.headers["Pitstop-Error-Kind"] == "invalid_input"
    assert dead.headers["Pitstop-Deliveries"] == "1"
    assert broker.delays == []  # bad input is never retried


async def test_a_runtime_failure_is_retried_with_back_off_then_dead_lettered(
    engine: Engine,
) -> None:
    broker = FakeBroker()
    broker.add(*(delivery(f"g{i}", v2([1, 1, 1, 1])) for i in range(8)))
    broker.add(delivery("boom", v2([-1, 0, 0, 0])))
    async with Running(engine, broker, max_deliver=3, backoff_s=0.5, backoff_max_s=0.75):
        await until(lambda: len(broker.dead) == 1)
    assert len(broker.answers) == 8  # its batch-mates were answered (the batch was split)
    assert broker.delays == [("boom", 0.5), ("boom", 0.75)]
    dead = broker.dead_of("boom")
    assert dead.headers["Pitstop-Deliveries"] == "3"
    assert dead.headers["Pitstop-Error-Kind"] == "internal"
    assert "minus one" in dead.headers["Pitstop-Error"]


async def test_a_message_delivered_too_often_is_dead_lettered_unread(engine: Engine) -> None:
    broker = FakeBroker()
    crashed = delivery("crasher", v2([1, 1, 1, 1]))
    broker.add(type(crashed)(crashed.id, crashed.body, {}, 6, 0, None))
    async with Running(engine, broker, max_deliver=5) as running:
        await running.settled(1)
    dead = broker.dead_of("crasher")
    assert dead.headers["Pitstop-Error-Kind"] == "undeliverable"
    assert "delivered 6 times" in dead.headers["Pitstop-Error"]
    assert running.series.counts()[Outcome.REDELIVERED] == 1


async def test_an_alias_flip_applies_to_the_next_batch(engine: Engine, tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.add(*(delivery(f"a{i}", v2([1, 1, 1, 1])) for i in range(5)))
    async with Running(engine, broker) as running:
        await running.settled(5)
        with Registry.open(
            f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts"
        ) as registry:
            registry.set_alias("score", "production", 2, actor="t")
        await until(lambda: engine.manager.resolve("score", None).key.version == 2)
        broker.add(*(delivery(f"b{i}", v2([1, 1, 1, 1])) for i in range(5)))
        await running.settled(10)
    assert {broker.answer_of(f"a{i}")["model_version"] for i in range(5)} == {"1"}
    after = [broker.answer_of(f"b{i}") for i in range(5)]
    assert {a["model_version"] for a in after} == {"2"}
    assert after[0]["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1],
                                    "data": [104.0]}]  # fmt: skip


async def test_messages_for_a_version_not_served_yet_are_held_not_dead_lettered(
    engine: Engine, tmp_path: Path
) -> None:
    broker = FakeBroker()
    broker.add(*(delivery(f"c{i}", v2([1, 1, 1, 1])) for i in range(3)))
    async with Running(engine, broker, version="canary", ack_wait_s=0.3) as running:
        await asyncio.sleep(0.5)
        assert broker.fetches == 0  # nothing fetched while the alias is missing
        with Registry.open(
            f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts"
        ) as registry:
            registry.set_alias("score", "canary", 2, actor="t")
        await running.settled(3)
    assert broker.dead == []
    assert {broker.answer_of(f"c{i}")["model_version"] for i in range(3)} == {"2"}


async def test_a_failed_publication_gives_the_message_back(engine: Engine) -> None:
    broker = FakeBroker(fail_publish={"p1"})
    broker.add(delivery("p0", v2([1, 1, 1, 1])), delivery("p1", v2([2, 2, 2, 2])))
    async with Running(engine, broker) as running:
        await running.settled(2)
    assert sorted(p.delivery.id for p in broker.answers) == ["p0", "p1"]
    assert [key for key, _delay in broker.delays] == ["p1"]
    counts = running.series.counts()
    assert counts[Outcome.PUBLISH_FAILED] == 1
    assert counts[Outcome.ANSWERED] == 2


async def test_stop_settles_every_batch_in_flight(engine: Engine) -> None:
    broker = FakeBroker()
    broker.add(*(delivery(f"s{i}", v2([-2, 1, 1, 1])) for i in range(6)))  # 0.3 s each call
    running = Running(engine, broker, batch_size=2, max_wait_ms=0, in_flight=2)
    async with running:
        await until(lambda: broker.unacked > 0)
    # stopped: what was fetched is answered (nothing left unacknowledged), the rest waits
    assert broker.unacked == 0
    answered = {p.delivery.id for p in broker.answers}
    assert len(answered) >= 2
    assert {d.id for d in broker.waiting} | answered == {f"s{i}" for i in range(6)}


EMPTY = "return {'y': x.sum(axis=1).astype(np.float32)[:0]}"


async def test_an_answer_that_cannot_be_built_is_a_dead_letter_not_a_loop(
    engine: Engine, tmp_path: Path
) -> None:
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts") as reg:
        hm.push(reg, tmp_path / "v3", "empty", EMPTY, "production")
    await until(lambda: engine.manager.can_serve("empty", None))
    broker = FakeBroker()
    broker.add(delivery("e0", {"a": 1, "b": 1, "c": 1, "d": 1}))  # a record: one row each
    async with Running(engine, broker, model="empty") as running:
        await running.settled(1)
    dead = broker.dead_of("e0")
    assert dead.headers["Pitstop-Error-Kind"] == "internal"
    assert "could not be built" in dead.headers["Pitstop-Error"]
    assert broker.delays == []


async def test_a_canary_policy_splits_the_stream_and_keeps_sticky_keys_on_one_arm(
    engine: Engine, tmp_path: Path
) -> None:
    from pitstop.registry import TrafficPolicy
    from pitstop.registry.policy import Arm

    policy = TrafficPolicy(arms=(Arm("production", 70.0), Arm("2", 30.0)), sticky_header="X-User")
    with Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts") as reg:
        reg.delivery.set_policy("score", policy, actor="t")
    await until(lambda: engine.dataplane.sticky_header("score") == "x-user")
    await until(lambda: engine.manager.can_serve("score", 2))
    broker = FakeBroker()
    users = [f"user-{n}" for n in range(40)]
    broker.add(*(delivery(f"k{i}", v2([1, 1, 1, 1]), {"X-User": users[i % 40]})
                 for i in range(400)))  # fmt: skip
    async with Running(engine, broker, batch_size=32, max_wait_ms=5) as running:
        await running.settled(400)
    arm_of: dict[str, set[str]] = {}
    for published in broker.answers:
        user = published.headers["X-User"]
        arm_of.setdefault(user, set()).add(published.headers["Pitstop-Model-Version"])
    assert all(len(arms) == 1 for arms in arm_of.values())  # sticky: one arm per key
    on_canary = sum(1 for arms in arm_of.values() if arms == {"2"})
    assert 3 <= on_canary <= 24  # ~30% of 40 keys (binomial, p < 1e-4 outside)


async def test_a_fetch_that_raises_does_not_stop_the_consumer(engine: Engine) -> None:
    broker = FakeBroker(broken_fetches=2)
    broker.add(*(delivery(f"f{i}", v2([1, 1, 1, 1])) for i in range(5)))
    async with Running(engine, broker) as running:
        await running.settled(5)
    assert len(broker.answers) == 5


async def test_cancelled_mid_batch_it_gives_the_messages_back(engine: Engine) -> None:
    broker = FakeBroker()
    broker.add(*(delivery(f"c{i}", v2([-2, 1, 1, 1])) for i in range(4)))  # 0.3 s per call
    running = Running(engine, broker, batch_size=2, max_wait_ms=0, in_flight=2)
    task = asyncio.create_task(running.consumer.run())
    await until(lambda: broker.unacked == 4, within_s=2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # nothing is left held: each message answered or given back to be delivered again
    assert broker.unacked == 0
    given_back = {key for key, _delay in broker.delays}
    assert given_back | {p.delivery.id for p in broker.answers} == {f"c{i}" for i in range(4)}
    assert given_back
