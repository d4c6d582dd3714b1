"""The Engine: pitstop's composed core, with no network in it.

One Engine owns the registry (and its artifact store), the ModelManager, the DataPlane, the
monitoring parts and the background loops (registry watch — woken by PostgreSQL's change
notices —, heartbeat, rollout-window publishing, rollout controller, drift scoring, cost
snapshots). Every entry point hosts a started Engine: the HTTP and gRPC servers, and
equally a batch job, a stream consumer or a test, which need no socket::

    async with Engine(Settings(home=home)) as engine:
        served = await engine.dataplane.infer("iris", None, request)

Lifecycle: ``start()`` reads the trusted keys (``PITSTOP_REQUIRE_SIGNATURE``: engine/trust.py),
opens the registry, clears this replica's stale serving states, reads the registry once (models
then load in the background; ``dataplane.ready()`` says when), and starts the loops.
``begin_drain()`` is the one shutdown state: readiness turns false at once, requests keep being
served, hosts close connections after their answers. ``stop(grace_s)`` drains (waiting up to
``grace_s`` for readiness probes to notice), cancels the loops, closes the DataPlane (shadow
workers), unloads every version (waiting for leased requests up to ``drain_timeout_s``), removes
this replica from the registry's list and closes the registry and tracing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from datetime import UTC, datetime
from types import TracebackType

from pitstop import __version__
from pitstop.engine.monitors import Observability
from pitstop.engine.trust import SignaturePolicy, signature_policy, trusted_keys
from pitstop.errors import NotFound, RegistryUnavailable
from pitstop.monitoring.inventory import Inventory
from pitstop.monitoring.tracing import Tracing
from pitstop.registry import Registry
from pitstop.serving.bandit_controller import BANDIT_ACTOR, BanditController
from pitstop.serving.dataplane import DataPlane
from pitstop.serving.evidence import SharedEvidence, publish
from pitstop.serving.feedback import FeedbackDesk
from pitstop.serving.inventory import build_inventory
from pitstop.serving.manager import ManagerOptions, ModelManager
from pitstop.serving.model_view import ServerInfo
from pitstop.serving.prediction_log import PredictionLog
from pitstop.serving.rollout_controller import RolloutController
from pitstop.serving.statistics import Statistics
from pitstop.settings import Settings

log = logging.getLogger(__name__)

EXTENSIONS = (
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "statistics",
    "sequence",
)
"""Protocol extensions the transports implement, advertised in the server metadata (with
``system_shared_memory`` when that setting is on)."""


APPLIED_CHECK_S = 0.1
"""How soon after applying a registry generation a replica records it."""


def replica_name(settings: Settings) -> str:
    """This process's name in the registry's serving states and leases."""
    return settings.replica or f"{socket.gethostname()}:{settings.http_port}"


class Engine:
    """The core of one pitstop process. Start it, use ``dataplane`` (and ``registry``,
    ``manager``, ``observability``), stop it; or use it as an async context manager. Start and
    stop on the event loop that serves its requests."""

    def __init__(self, settings: Settings, *, tracing: Tracing | None = None) -> None:
        """``tracing`` replaces the one the settings describe (tests export spans in memory)."""
        self.settings = settings
        self.replica = replica_name(settings)
        self._tracing = tracing
        self._parts: tuple[Registry, ModelManager, DataPlane, Observability] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._drain_early = False
        """begin_drain() before start(): the DataPlane starts draining."""
        self._trust: SignaturePolicy | None = None
        """PITSTOP_REQUIRE_SIGNATURE's policy, once built."""
        self._feedback: FeedbackDesk | None = None

    # -- what hosts use ------------------------------------------------------------------------

    @property
    def registry(self) -> Registry:
        return self._started[0]

    @property
    def manager(self) -> ModelManager:
        return self._started[1]

    @property
    def dataplane(self) -> DataPlane:
        return self._started[2]

    @property
    def observability(self) -> Observability:
        return self._started[3]

    @property
    def feedback(self) -> FeedbackDesk:
        """Joins feedback to recent predictions (NotFound when ``PITSTOP_PREDICTIONS=off``)."""
        self._started  # noqa: B018 - raises before start()
        if self._feedback is None:
            raise NotFound("predictions are not recorded (PITSTOP_PREDICTIONS=off): no feedback")
        return self._feedback

    @property
    def draining(self) -> bool:
        """True from :meth:`begin_drain` on: hosts answer with ``Connection: close``. The one
        shutdown state, kept by the DataPlane (its readiness turns false with it)."""
        return self._parts[2].draining if self._parts is not None else self._drain_early

    def inventory(self) -> Inventory:
        """What this server serves now, for ``/metrics`` (event loop): with several workers,
        their gauges and counters summed."""
        return self.observability.inventory_everywhere(self._own_inventory())

    def _own_inventory(self) -> Inventory:
        """What this process holds now (the drift loop's view)."""
        manager, dataplane, observability = self.manager, self.dataplane, self.observability
        return build_inventory(
            manager, dataplane.shadows, dataplane.fallbacks, observability.behaviour
        )

    @property
    def _started(self) -> tuple[Registry, ModelManager, DataPlane, Observability]:
        if self._parts is None:
            raise RuntimeError("the Engine is not started: await engine.start() first")
        return self._parts

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Engine:
        if self._parts is not None:
            return self
        if self._stopped:
            raise RuntimeError("an Engine starts once; build a new one")
        registry, manager, dataplane, observability = await asyncio.to_thread(self._build)
        self._parts = (registry, manager, dataplane, observability)
        if self._drain_early:
            dataplane.begin_drain()
        if self._trust is not None:
            await self._record_trust(registry, self._trust)
        await asyncio.to_thread(registry.clear_serving_states, self.replica)
        try:
            await manager.refresh()
        except Exception:
            log.exception("first registry read failed; will retry")
        # Everything built so far lives as long as the process: move it out of the cyclic
        # collector's way (the ModelManager does the same after each load).
        gc.collect()
        gc.freeze()
        settings = self.settings
        loops = [("registry-watch", manager.watch(settings.watch_interval_s))]
        if settings.rollout_controller:
            evidence = SharedEvidence(
                registry, settings.replica_timeout_s, settings.rollout_publish_s
            )
            controller = RolloutController(
                registry.delivery, evidence, self.replica, tick_s=settings.rollout_tick_s
            )
            loops.append(("rollouts", controller.run()))
        publishing = publish(
            registry, observability.windows, self.replica, settings.rollout_publish_s
        )
        loops.append(("rollout-windows", publishing))
        loops.append(("heartbeat", self._heartbeat()))
        if self._feedback is not None:
            loops.append(("predictions", self._feedback.log.run()))
        if settings.bandit_controller:
            bandits = BanditController(
                registry.delivery, registry.outcomes, self.replica, actor=BANDIT_ACTOR
            )
            loops.append(("bandits", bandits.run()))
        for run in observability.loops(self._own_inventory):
            loops.append((run.__name__, run()))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(coro, name=f"pitstop-{name}") for name, coro in loops]
        return self

    async def _heartbeat(self) -> None:
        """Record this replica and the generation it has applied: every ``heartbeat_s``, and
        within :data:`APPLIED_CHECK_S` of applying a new one (so "applied on 2/3 replicas"
        moves promptly). Never fatal: while the registry is unreachable the contact says so."""
        registry, manager, settings = self.registry, self.manager, self.settings
        started, written, due = datetime.now(UTC), None, 0.0
        while True:
            applied = manager.applied_generation
            if applied != written or time.monotonic() >= due:
                try:
                    await asyncio.to_thread(
                        registry.replicas.heartbeat, self.replica, host=socket.gethostname(),
                        pid=os.getpid(), software=__version__, started_at=started,
                        applied_generation=applied,
                    )  # fmt: skip
                except RegistryUnavailable:
                    pass  # the watch loop reports it; try again when the next beat is due
                except Exception:
                    log.exception("heartbeat failed")
                written, due = applied, time.monotonic() + settings.heartbeat_s
            await manager.note_workers()
            await asyncio.sleep(min(APPLIED_CHECK_S, settings.heartbeat_s))

    async def _record_trust(self, registry: Registry, policy: SignaturePolicy) -> None:
        """Say which keys this server trusts: in its log, and in the registry's history when
        the set differs from the last one recorded (``trust.policy``). Never fatal."""
        log.info("loading only versions signed by a trusted key: %s", ", ".join(policy.key_ids))
        try:
            await asyncio.to_thread(
                registry.signatures.record_trust, policy.key_ids, actor=f"server:{self.replica}"
            )
        except Exception as exc:
            log.warning("could not record the trusted keys in the history: %s", exc)

    def _build(self) -> tuple[Registry, ModelManager, DataPlane, Observability]:
        settings = self.settings
        keys = trusted_keys(settings)  # first: a bad key file stops the start before anything
        registry = Registry.from_settings(settings)
        self._trust = signature_policy(settings, keys, registry.signatures.of)
        manager = ModelManager(
            registry,
            ManagerOptions(
                replica=self.replica,
                warmup_runs=settings.warmup_runs,
                load_timeout_s=settings.load_timeout_s,
                load_attempts=settings.load_retries + 1,
                retry_backoff_s=settings.load_retry_backoff_s,
                inference_threads=settings.inference_threads,
                max_queue_size=settings.max_queue_size,
                drain_timeout_s=settings.drain_timeout_s,
                runtime_threads=settings.runtime_threads,
                memory_budget=settings.memory_budget_bytes,
                load_policy=settings.load_policy,
                on_demand_max=settings.on_demand_max,
                cold_start_queue=settings.cold_start_queue,
            ),
            trust=self._trust,
        )
        observability = Observability.build(settings, registry, self.replica, self._tracing)
        observers = observability.observers()
        mode = settings.predictions
        if mode == "auto":
            mode = "registry" if settings.worker_dir is not None else "memory"
        if mode != "off":
            recent = PredictionLog(
                settings.predictions_capacity, settings.predictions_ttl_s,
                registry.outcomes if mode == "registry" else None,
            )  # fmt: skip
            self._feedback = FeedbackDesk(recent, registry.outcomes)
            observers.append(recent)
        dataplane = DataPlane(
            manager,
            ServerInfo(
                name=settings.server_name,
                version=__version__,
                extensions=EXTENSIONS
                + (("system_shared_memory",) if settings.system_shared_memory else ()),
            ),
            default_timeout_us=settings.default_timeout_us,
            statistics=Statistics(observability.tally, observability.everyone),
            observers=observers,
            tracing=observability.tracing,
            wants_metadata=observability.request_log is not None,
        )
        if self._feedback is not None:
            dataplane.predictions = self._feedback.log
        return registry, manager, dataplane, observability

    def begin_drain(self) -> None:
        """Readiness turns false at once; every request keeps being served."""
        if self._parts is None:
            self._drain_early = True
        else:
            self._parts[2].begin_drain()

    async def stop(self, grace_s: float = 0.0) -> None:
        """Drain, wait ``grace_s``, then stop the loops and release everything (see the module
        docstring). Safe to call twice, or on an Engine that never started."""
        self.begin_drain()
        if self._parts is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        if grace_s > 0:
            await asyncio.sleep(grace_s)
        registry, manager, dataplane, observability = self._parts
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await dataplane.close()
        await manager.close()
        with contextlib.suppress(Exception):  # best effort: the row times out anyway
            await asyncio.to_thread(registry.replicas.leave, self.replica)
        await asyncio.to_thread(registry.close)
        if observability.tracing is not None:
            await asyncio.to_thread(observability.tracing.shutdown)

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        await self.stop()
