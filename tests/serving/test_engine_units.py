"""The ModelManager and the DataPlane driven through their seams (a fake registry, runtime and
loader): swaps, drains, retries, failures, fallbacks, shadows and deadlines, in milliseconds.
The subprocess suites (tests/transports, tests/reliability) remain the acceptance layer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import numpy as np
import pytest

from pitstop.errors import DeadlineExceeded, InvalidInput, LoadError, ModelNotFound, PitstopError
from pitstop.monitoring.attempt import Attempt, CacheUse
from pitstop.protocol.tensor import InferRequest
from pitstop.registry import Arm, Shadow, TrafficPolicy
from pitstop.serving.dataplane import DataPlane
from pitstop.serving.manager import ManagerOptions, ModelManager
from pitstop.serving.model_view import ServerInfo
from pitstop.serving.version_policy import VersionState
from pitstop.serving.window import Windows
from tests.serving.fakes import FakeLoader, FakeSource

pytestmark = pytest.mark.timeout(10)

ROW = InferRequest(inputs={"x": np.ones((1, 4), np.float32)})


async def until(condition: Callable[[], bool], within_s: float = 3.0) -> None:
    """Poll ``condition`` (state the fakes and the manager change from threads and tasks)."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - no event to wait on: these are plain reads
            await asyncio.sleep(0.002)


class Core:
    """A ModelManager and DataPlane over fakes; ``m`` v1 is production."""

    def __init__(self, **options: float) -> None:
        self.source = FakeSource()
        self.source.set_alias("m", "production", 1)
        self.loader = FakeLoader()
        settings = {"replica": "test", "warmup_runs": 0, "retry_backoff_s": 0.001, **options}
        self.manager = ModelManager(self.source, ManagerOptions(**settings), self.loader)  # type: ignore[arg-type]
        self.attempts: list[Attempt] = []
        self.windows = Windows()
        self.dataplane = DataPlane(
            self.manager, ServerInfo("pitstop", "test", ()), observers=[self, self.windows]
        )

    def observe_attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def state(self, number: int) -> VersionState | None:
        found = [v for v in self.manager.versions_of("m") if v.key.version == number]
        return found[0].state if found else None

    def serves(self, number: int) -> bool:
        """Whether production routes to ``number``."""
        try:
            return self.manager.resolve("m", None).key.version == number
        except PitstopError:
            return False

    async def settle(self, number: int, production: bool = False) -> None:
        """Read the registry; wait until ``number`` is READY and the registry's generation is
        applied (routes published: READY is set a moment before the routes are)."""
        await self.manager.refresh()
        await until(lambda: self.state(number) is VersionState.READY)
        generation = self.source.generation()
        await until(lambda: self.manager.applied_generation >= generation)
        if production:
            await until(lambda: self.serves(number))

    async def y(self, version: int | str | None = None, deadline: float | None = None) -> float:
        served = await self.dataplane.infer("m", version, ROW, deadline=deadline)
        return float(served.response.outputs["y"][0, 0])


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    built = Core(drain_timeout_s=2.0)
    await built.settle(1)
    yield built
    await built.dataplane.close()
    await built.manager.close()


# -- ModelManager ---------------------------------------------------------------------------------


async def test_a_swap_waits_for_a_leased_request_then_unloads_the_old_version(core: Core) -> None:
    old = core.loader.runtimes[("m", 1)]
    old.gate = threading.Event()
    request = asyncio.create_task(core.y())  # holds a lease on v1, stuck in predict
    await until(lambda: old.calls == 1)
    core.source.set_alias("m", "production", 2)
    await core.settle(2, production=True)
    await until(lambda: core.state(1) is VersionState.DRAINING)
    assert await core.y() == 2.0  # new requests already go to v2
    assert not old.unloaded.is_set()  # v1 waits for its request
    old.gate.set()
    assert await request == 1.0  # answered by the version that took it
    await until(old.unloaded.is_set)


async def test_a_request_that_outlives_the_drain_timeout_does_not_block_the_unload() -> None:
    core = Core(drain_timeout_s=0.05)
    await core.settle(1)
    old = core.loader.runtimes[("m", 1)]
    old.gate = threading.Event()
    request = asyncio.create_task(core.y())
    await until(lambda: old.calls == 1)
    core.source.set_alias("m", "production", 2)
    await core.settle(2)
    await until(old.unloaded.is_set, within_s=1.0)  # unloaded although its request still runs
    old.gate.set()
    await request
    await core.manager.close()


async def test_transient_load_failures_are_retried_with_back_off(core: Core) -> None:
    core.loader.failures[("m", 2)] = [OSError("disk hiccup"), TimeoutError("slow")]
    core.source.set_alias("m", "production", 2)
    await core.settle(2, production=True)
    assert core.loader.attempts[("m", 2)] == 3
    assert await core.y() == 2.0


async def test_a_refused_version_fails_at_once_and_the_previous_one_keeps_serving(
    core: Core,
) -> None:
    core.loader.failures[("m", 2)] = [LoadError("handler refused")]
    core.source.set_alias("m", "production", 2)
    await core.manager.refresh()
    await until(lambda: core.state(2) is VersionState.FAILED)
    assert core.loader.attempts[("m", 2)] == 1  # not retried
    assert await core.y() == 1.0


async def test_the_next_registry_change_retries_a_failed_version(core: Core) -> None:
    core.loader.failures[("m", 2)] = [LoadError("bad artifact")]
    core.source.set_alias("m", "production", 2)
    await core.manager.refresh()
    await until(lambda: core.state(2) is VersionState.FAILED)
    core.source.touch()  # e.g. the operator pushed a fix elsewhere, or set any alias
    await core.settle(2, production=True)
    assert await core.y() == 2.0


# -- DataPlane ------------------------------------------------------------------------------------


async def test_the_fallback_answers_when_the_chosen_version_fails(core: Core) -> None:
    core.source.set_policy("m", TrafficPolicy(fallback="2"), pinned=(2,))
    await core.settle(2)
    core.loader.runtimes[("m", 1)].fail = True
    served = await core.dataplane.infer("m", None, ROW)
    assert served.version == 2
    assert served.fallback is not None
    assert core.dataplane.fallbacks[("m", served.fallback)] == 1
    failed, answered = core.attempts
    assert (failed.version, failed.routed, failed.final, failed.ok) == (1, True, False, False)
    assert (answered.version, answered.final, answered.fallback) == (2, True, served.fallback)
    assert answered.request_ns >= failed.elapsed_ns + answered.elapsed_ns
    # The rollout judge sees the policy-routed arm's failure, not the fallback's answer.
    since = datetime.fromtimestamp(0, UTC)
    canary, fallback = (core.windows.summary("m", n, since) for n in (1, 2))
    assert canary.errors == 1
    assert fallback.requests == 0
    stats = {(s.version, s.success.count, s.fail.count) for s in core.dataplane.statistics.select()}
    assert stats == {(1, 0, 1), (2, 1, 0)}


async def test_observers_see_one_attempt_per_call_with_what_it_did(core: Core) -> None:
    await core.settle(1, production=True)
    assert await core.y() == 1.0
    [served] = core.attempts
    assert (served.model, served.version, served.transport, served.final) == ("m", 1, "other", True)
    assert served.ok
    assert served.rows == 1
    assert served.batch_size == 1
    assert served.counts_execution
    assert served.inputs is not None
    assert set(served.inputs) == {"x"}
    assert served.cache is CacheUse.NONE
    assert not served.routed
    assert 0 < served.elapsed_ns <= served.request_ns
    with pytest.raises(ModelNotFound):
        await core.dataplane.infer("nope", None, ROW)
    unknown = core.attempts[-1]
    assert (unknown.version, unknown.registered, type(unknown.error)) == (
        None,
        False,
        ModelNotFound,
    )
    bad = InferRequest(inputs={"x": np.ones((1, 3), np.float32)})
    with pytest.raises(InvalidInput):
        await core.dataplane.infer("m", None, bad)
    refused = core.attempts[-1]
    assert (refused.version, refused.inputs, refused.batch_size) == (1, None, 0)
    core.dataplane.rejected("m", "rest", InvalidInput("body"))
    assert (core.attempts[-1].registered, core.attempts[-1].request) == (True, None)


class Broken:
    def observe_attempt(self, attempt: Attempt) -> None:
        raise RuntimeError("observer bug")


async def test_a_failing_observer_never_fails_the_request(core: Core) -> None:
    await core.settle(1, production=True)
    dataplane = DataPlane(core.manager, ServerInfo("pitstop", "test", ()), observers=[Broken()])
    served = await dataplane.infer("m", None, ROW)
    assert served.version == 1
    assert [s.success.count for s in dataplane.statistics.select()] == [1]


async def test_a_shadow_gets_a_copy_and_its_failures_never_reach_the_client(core: Core) -> None:
    policy = TrafficPolicy(arms=(Arm("production", 100.0),), shadows=(Shadow("2", 1.0),))
    core.source.set_policy("m", policy, pinned=(2,))
    await core.settle(2)
    shadow = core.loader.runtimes[("m", 2)]
    assert await core.y() == 1.0
    await until(lambda: shadow.calls == 1)
    shadow.fail = True
    assert await core.y() == 1.0  # the shadow's failure is its own
    await until(lambda: shadow.calls == 2)
    shadows = [a for a in core.attempts if a.transport == "shadow"]
    assert [(a.version, a.ok) for a in shadows] == [(2, True), (2, False)]


async def test_a_deadline_that_passes_in_the_queue_is_504_and_never_runs() -> None:
    core = Core(inference_threads=1)
    await core.settle(1)
    runtime = core.loader.runtimes[("m", 1)]
    runtime.gate = threading.Event()
    blocker = asyncio.create_task(core.y())  # occupies the only inference thread
    await until(lambda: runtime.calls == 1)
    waiting = asyncio.create_task(core.y(deadline=time.monotonic() + 0.02))
    await asyncio.sleep(0.05)
    runtime.gate.set()
    with pytest.raises(DeadlineExceeded):
        await waiting
    assert await blocker == 1.0
    assert runtime.calls == 1  # the late request never reached the model
    await core.manager.close()
