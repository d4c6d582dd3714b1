"""Loading on demand, the memory budget and LRU eviction, through the ModelManager and DataPlane
over fakes (a registry, runtimes whose memory the fake loader reports)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from pitstop.errors import DeadlineExceeded, Overloaded, Unavailable, VersionNotFound
from pitstop.registry import TrafficPolicy, VersionRecord
from pitstop.serving.loader import Loaded
from pitstop.serving.version_policy import VersionState
from tests.serving.fakes import FakeLoader
from tests.serving.test_engine_units import ROW, Core, until

pytestmark = pytest.mark.timeout(10)
MIB = 1 << 20


class SizedLoader(FakeLoader):
    """Every version measures ``mib`` MiB; ``delay`` seconds per load."""

    def __init__(self, mib: int = 100, delay: float = 0.0) -> None:
        super().__init__()
        self.mib, self.delay = mib, delay

    async def load(self, loaded: VersionRecord) -> Loaded:
        if self.delay:
            await asyncio.sleep(self.delay)
        runtime, metadata, report = await super().load(loaded)
        return runtime, metadata, replace(report, memory_bytes=self.mib * MIB)


def lazy_core(**options: object) -> Core:
    core = Core(load_policy="on-demand", **options)  # type: ignore[arg-type]
    core.loader = SizedLoader()
    core.manager._loader = core.loader
    for model in ("a", "b", "c", "d"):
        core.source.set_alias(model, "production", 1)
    core.source.register("m", 2, 3)
    return core


@pytest.fixture
async def lazy() -> AsyncIterator[Core]:
    built = lazy_core(memory_budget=250 * MIB, on_demand_max=10)
    await built.manager.refresh()
    yield built
    await built.dataplane.close()
    await built.manager.close()


def loaded(core: Core) -> list[str]:
    return sorted(
        f"{v.key.model}{v.key.version}"
        for v in core.manager.loaded_versions()
        if v.state is VersionState.READY
    )


async def infer(core: Core, model: str, version: int | None = None) -> float:
    served = await core.dataplane.infer(model, version, ROW)
    return float(served.response.outputs["y"][0, 0])


async def test_nothing_loads_until_a_request_needs_it_and_the_server_is_ready(lazy: Core) -> None:
    assert loaded(lazy) == []
    assert lazy.manager.ready()  # lazy models never hold readiness back
    assert await infer(lazy, "a") == 1.0
    assert loaded(lazy) == ["a1"]
    assert lazy.manager.cold_starts["a"] == 1
    assert await infer(lazy, "a") == 1.0  # warm now
    assert lazy.manager.cold_starts["a"] == 1


async def test_the_least_recently_used_version_is_evicted_when_the_budget_is_full(
    lazy: Core,
) -> None:
    await infer(lazy, "a")
    await infer(lazy, "b")
    await infer(lazy, "a")  # a is now more recent than b
    await infer(lazy, "c")  # 3 x 100 MiB > 250 MiB: b goes
    assert loaded(lazy) == ["a1", "c1"]
    assert lazy.manager.evictions == {"b": 1}
    await infer(lazy, "b")  # a is the least recent now
    assert loaded(lazy) == ["b1", "c1"]


async def test_a_version_with_a_request_in_flight_is_never_evicted(lazy: Core) -> None:
    await infer(lazy, "a")
    await infer(lazy, "b")
    runtime = lazy.loader.runtimes[("a", 1)]
    runtime.gate = threading.Event()
    busy = asyncio.create_task(infer(lazy, "a"))  # a is the least recent, but busy
    await until(lambda: runtime.calls == 2)
    await infer(lazy, "c")
    assert loaded(lazy) == ["a1", "c1"]  # b went instead
    runtime.gate.set()
    assert await busy == 1.0


async def test_when_nothing_can_be_evicted_the_load_is_refused_with_503(lazy: Core) -> None:
    for model in ("a", "b"):
        await infer(lazy, model)
    gates = []
    for model in ("a", "b"):
        runtime = lazy.loader.runtimes[(model, 1)]
        runtime.gate = threading.Event()
        gates.append(runtime.gate)
    busy = [asyncio.create_task(infer(lazy, m)) for m in ("a", "b")]
    await until(lambda: all(lazy.loader.runtimes[(m, 1)].calls == 2 for m in ("a", "b")))
    with pytest.raises(Unavailable, match="memory budget 250 MiB exhausted"):
        await infer(lazy, "c")
    assert lazy.manager.refusals["c"] == 1
    for gate in gates:
        gate.set()
    await asyncio.gather(*busy)
    assert await infer(lazy, "c") == 1.0  # room again once they are idle


async def test_any_registered_version_is_addressable_by_number(lazy: Core) -> None:
    assert await infer(lazy, "m", 3) == 3.0  # no alias points at v3
    with pytest.raises(VersionNotFound):
        await infer(lazy, "m", 9)


async def test_an_always_model_keeps_its_aliases_pinned_and_loads_old_versions_on_demand() -> None:
    core = lazy_core(memory_budget=250 * MIB)
    core.source.set_policy("m", TrafficPolicy(load="always"), ())
    await core.manager.refresh()
    await until(lambda: loaded(core) == ["m1"])  # loaded at start, as always
    assert await infer(core, "m", 2) == 2.0  # an unaliased version, on demand
    await infer(core, "a")
    await infer(core, "b")  # 4 x 100 MiB: the on-demand ones make room, m1 stays
    assert "m1" in loaded(core)
    assert sum(core.manager.evictions.values()) >= 1
    await core.dataplane.close()
    await core.manager.close()


async def test_requests_arriving_during_a_cold_start_wait_for_it() -> None:
    core = lazy_core(cold_start_queue=2)
    core.loader.delay = 0.2
    await core.manager.refresh()
    waiting = [asyncio.create_task(infer(core, "a")) for _ in range(2)]
    await until(lambda: any(v.waiters == 2 for v in core.manager.loaded_versions()))
    with pytest.raises(Overloaded, match="2 requests already wait"):
        await infer(core, "a")
    assert await asyncio.gather(*waiting) == [1.0, 1.0]
    assert core.manager.cold_starts["a"] == 1  # one load for all of them
    await core.dataplane.close()
    await core.manager.close()


async def test_a_cold_start_longer_than_the_deadline_is_a_504() -> None:
    core = lazy_core()
    core.loader.delay = 0.5
    await core.manager.refresh()
    with pytest.raises(DeadlineExceeded, match="still loading on demand"):
        await core.dataplane.infer("a", None, ROW, deadline=time.monotonic() + 0.1)
    await core.dataplane.close()
    await core.manager.close()


async def test_the_on_demand_count_is_bounded_without_a_budget() -> None:
    core = lazy_core(on_demand_max=2)
    await core.manager.refresh()
    for model in ("a", "b", "c", "d"):
        await infer(core, model)
    assert loaded(core) == ["c1", "d1"]
    await core.dataplane.close()
    await core.manager.close()
