"""The ModelManager: reconciles loaded versions with what the registry's aliases target.

It owns every loaded runtime, the alias routing table and the background tasks that load, warm
up, drain and unload versions. Decisions come from the pure :func:`version_policy.plan`; this
module only applies them. All state changes happen on the event loop; framework and database
calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from pitstop.errors import (
    DeadlineExceeded,
    ModelNotFound,
    Overloaded,
    PitstopError,
    RegistryUnavailable,
    Unavailable,
)
from pitstop.monitoring.histogram import LOAD_BUCKETS, Histogram
from pitstop.protocol.reference import VersionRef
from pitstop.registry import RegistrySnapshot, TrafficPolicy, VersionRecord
from pitstop.registry.options import DEFAULT_MAX_QUEUE_SIZE, SwapPolicy
from pitstop.registry.records import TokenRecord
from pitstop.runtimes.base import Responder
from pitstop.serving.batcher import execution_for
from pitstop.serving.cache import ResponseCache
from pitstop.serving.contact import RegistryContact, follow
from pitstop.serving.decoupled import DecoupledExecution
from pitstop.serving.lease import Lease, LoadedVersion
from pitstop.serving.loader import (
    Loader,
    TrustPolicy,
    VersionLoader,
    failure_reason,
    is_transient,
    release_memory,
)
from pitstop.serving.repository import RepositoryEntry, repository_rows
from pitstop.serving.residency import Admission, Resident, admit
from pitstop.serving.routing import DEFAULT_ALIAS, resolve
from pitstop.serving.source import VersionSource
from pitstop.serving.version_policy import AliasKey, VersionKey, VersionState, plan, settled

log = logging.getLogger(__name__)

DEFAULT_POLICY = TrafficPolicy()


@dataclass(frozen=True)
class ManagerOptions:
    replica: str
    warmup_runs: int = 2
    load_timeout_s: float = 120.0
    load_attempts: int = 3
    retry_backoff_s: float = 1.0
    inference_threads: int = 4
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    """Bound on waiting requests per version without a batcher (a batcher has its own)."""
    drain_timeout_s: float = 30.0
    runtime_threads: int = 1
    memory_budget: int | None = None
    """Bytes every loaded version may hold together (None: no budget); see residency.py."""
    load_policy: str = "always"
    """Models whose traffic policy sets no ``load``: ``always`` or ``on-demand``."""
    on_demand_max: int | None = 64
    """On-demand versions that may be resident at once."""
    cold_start_queue: int = 256
    """Requests that may wait for one version to load on demand."""


class ModelManager:
    def __init__(
        self,
        source: VersionSource,
        options: ManagerOptions,
        loader: Loader | None = None,
        *,
        trust: TrustPolicy | None = None,
    ) -> None:
        """``loader`` replaces the VersionLoader the options describe (tests load fakes);
        ``trust``: the policy that VersionLoader asks before fetching a version."""
        self._source = source
        self._options = options
        self._generation = -1
        self._snapshot: RegistrySnapshot | None = None
        self._targets: dict[AliasKey, VersionKey] = {}
        self._records: dict[VersionKey, VersionRecord] = {}
        self._policies: dict[str, TrafficPolicy] = {}
        self._routes: Mapping[AliasKey, VersionKey] = {}
        self._versions: dict[VersionKey, LoadedVersion] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._closed = False
        self._loader: Loader = loader or VersionLoader(
            source.fetch, options.load_timeout_s, options.runtime_threads, options.warmup_runs,
            trust=trust,
        )  # fmt: skip
        self._pool = ThreadPoolExecutor(options.inference_threads, "pitstop-infer")
        """Runs every framework call, so the event loop never blocks on a model."""
        self._changed = asyncio.Condition()
        """Notified after every state change, for callers that wait for an outcome."""
        self._held: set[str] = set()
        """Models an operator unloaded through the repository API; not served until loaded."""
        self.applied_generation = -1
        """The newest registry generation whose targets all serve here (READY) or FAILED."""
        self.contact = RegistryContact()
        """Whether the registry answered the last read, and since when."""
        self.load_failures: Counter[str] = Counter()
        """Model → versions that ended FAILED since start (after retries), for metrics."""
        self._lazy_models: frozenset[str] = frozenset()
        """Models whose load policy is on-demand, as of the last snapshot."""
        self._numbers: dict[str, frozenset[int]] = {}
        """Model → every registered version number: what may load on demand."""
        self._extra: dict[VersionKey, VersionRecord] = {}
        """Records of versions demanded by number that no alias or policy names."""
        self._demanded: set[VersionKey] = set()
        """Versions requests wait for (loading on demand)."""
        self._refused: dict[VersionKey, str] = {}
        """Demanded versions the memory budget refused, with why (the waiters' 503)."""
        self._measured: dict[str, int] = {}
        """Digest → memory measured at its last load: the next load's estimate."""
        self._load_gate = asyncio.Lock()
        """With a memory budget, loads run one at a time so each is measured alone."""
        self.cold_starts: Counter[str] = Counter()
        """Model → loads a request had to wait for (on demand)."""
        self.evictions: Counter[str] = Counter()
        """Model → versions unloaded to make room (LRU within the budget)."""
        self.refusals: Counter[str] = Counter()
        """Model → on-demand loads refused because nothing could be evicted."""
        self.cold_start_seconds: dict[str, Histogram] = {}
        """Model → how long on-demand loads took (fetch, verify, load, warm-up)."""

    # -- requests -------------------------------------------------------------------------------

    def lease(self, model: str, ref: VersionRef) -> Lease:
        """A lease on the version that serves ``model`` at ``ref`` (number, alias, or None for
        the ``production`` alias). Raises NotFound or Unavailable with a message saying why."""
        return Lease(self.resolve(model, ref))

    def policy(self, model: str) -> TrafficPolicy:
        """``model``'s traffic policy as last read from the registry (default: 100% production)."""
        return self._policies.get(model) or DEFAULT_POLICY

    def tokens(self) -> tuple[TokenRecord, ...]:
        """The registry's bearer tokens as last read; no I/O."""
        return self._snapshot.tokens if self._snapshot is not None else ()

    def require_model(self, model: str) -> None:
        """Raise ModelNotFound unless the registry (as last read) has ``model``."""
        if self._snapshot is None or model not in self._snapshot.models:
            raise ModelNotFound(
                f"Request for unknown model: {model!r} is not found (no model of that name is "
                "registered)"
            )

    def resolve(self, model: str, ref: VersionRef) -> LoadedVersion:
        """The version ``ref`` serves. NotFound when the model, the alias or the version is
        unknown here; Unavailable when it is known but cannot serve now (loading, failed,
        unloaded through the repository API)."""
        self.require_model(model)
        if model in self._held:
            raise Unavailable(f"model {model!r} was unloaded through the repository API")
        return resolve(model, ref, self._targets, self._routes, self._versions, _Known(self))

    # -- state ----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """True when every model with a production alias has it routed to a READY version."""
        if self._snapshot is None or self._closed:
            return False
        lazy = self._lazy()
        return all(
            alias in self._routes
            for alias in self._targets
            if alias.alias == DEFAULT_ALIAS and alias.model not in lazy
        )

    def model_ready(self, model: str, ref: VersionRef) -> bool:
        """Whether ``ref`` can serve now. NotFound (not False) for a model, alias or version this
        server does not know: "not ready" and "no such thing" are different answers."""
        try:
            return self.resolve(model, ref).state is VersionState.READY
        except Unavailable:
            return False

    def can_serve(self, model: str, ref: VersionRef) -> bool:
        """Like :meth:`model_ready`, but False for anything unknown too."""
        try:
            return self.model_ready(model, ref)
        except PitstopError:
            return False

    def loaded_versions(self) -> list[LoadedVersion]:
        """Every version this server holds, in any state, sorted by key."""
        return sorted(self._versions.values(), key=lambda v: v.key)

    @property
    def memory_budget(self) -> int | None:
        return self._options.memory_budget

    def servable_versions(self, model: str) -> list[int]:
        """Every version a request may name: the READY ones and every registered one (each
        loads on demand), ascending."""
        ready = {v.key.version for v in self.versions_of(model) if v.state is VersionState.READY}
        return sorted(ready | self._numbers.get(model, frozenset()))

    def versions_of(self, model: str) -> list[LoadedVersion]:
        return sorted(
            (v for k, v in self._versions.items() if k.model == model), key=lambda v: v.key
        )

    # -- reconciliation -------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the registry if it changed and reconcile. Returns True when it had changed."""
        generation = await asyncio.to_thread(self._source.generation)
        if generation == self._generation:
            return False
        snapshot = await asyncio.to_thread(self._source.snapshot)
        self._apply_snapshot(snapshot)
        await self._reconcile()
        return True

    async def watch(self, interval_s: float) -> None:
        """Follow the registry until cancelled (:func:`pitstop.serving.contact.follow`: on
        change notices where the registry sends them, polling otherwise; a failed read is never
        fatal); after an outage, report every version's state again."""
        await follow(self._source, self.refresh, self.contact, interval_s, self._report_states)

    async def _report_states(self) -> None:
        for loaded in list(self._versions.values()):
            await self._set_state(loaded, loaded.state, loaded.error)

    def _apply_snapshot(self, snapshot: RegistrySnapshot) -> None:
        self._snapshot = snapshot
        self._generation = snapshot.generation
        targets: dict[AliasKey, VersionKey] = {}
        records: dict[VersionKey, VersionRecord] = {}
        for model, aliases in snapshot.models.items():
            for alias, record in aliases.items():
                key = VersionKey(model, record.number)
                targets[AliasKey(model, alias)] = key
                records[key] = record
        # Versions a traffic policy names by number (canaries, shadows, fallbacks) are served
        # like aliases whose name is the number; registry aliases are never all digits.
        for model, pinned in snapshot.pinned.items():
            for number, record in pinned.items():
                key = VersionKey(model, number)
                targets[AliasKey(model, str(number))] = key
                records[key] = record
        self._policies = dict(snapshot.policies)
        default = self._options.load_policy
        self._lazy_models = frozenset(
            model
            for model in snapshot.models
            if (((policy := self._policies.get(model)) and policy.load) or default) == "on-demand"
        )
        self._numbers = {m: frozenset(ns) for m, ns in snapshot.numbers.items()}
        self._extra = {
            k: r for k, r in self._extra.items() if k in self._versions or k in self._demanded
        }
        self._refused.clear()
        # A registry change is the operator's cue to try failed versions again.
        for key, loaded in list(self._versions.items()):
            if loaded.state is VersionState.FAILED:
                del self._versions[key]
        self._targets, self._records = targets, records

    async def _reconcile(self) -> None:
        if self._closed:
            return
        async with self._lock:
            states = {key: v.state for key, v in self._versions.items()}
            targets = {a: v for a, v in self._targets.items() if a.model not in self._held}
            lazy = self._lazy()
            eager = {key for alias, key in targets.items() if alias.model not in lazy}
            for key in eager:  # an alias of an always model now targets it: pinned
                if key in self._versions:
                    self._versions[key].on_demand = False
            preserving = frozenset(
                key.model
                for key in targets.values()
                if self._records[key].manifest.swap is SwapPolicy.RESOURCES
            )
            step = plan(
                targets, self._routes, states, preserving, lazy=lazy,
                demanded=frozenset(k for k in self._demanded if k.model not in self._held),
                resident=frozenset(k for k, v in self._versions.items() if v.on_demand),
            )  # fmt: skip
            for key in step.load:
                self._start_load(key, on_demand=key not in eager, eager=eager)
            self._routes = {
                alias: key
                for alias, key in step.routes.items()
                if self._versions[key].state is VersionState.READY  # not evicted just now
            }
            for key in step.unload:
                loaded = self._versions[key]
                if loaded.state is VersionState.READY:
                    loaded.state = VersionState.DRAINING
                    self._spawn(self._unload(loaded))
            if settled(targets, self._routes, states, lazy):
                self.applied_generation = self._generation
        async with self._changed:
            self._changed.notify_all()

    def _start_load(self, key: VersionKey, *, on_demand: bool, eager: set[VersionKey]) -> None:
        """Admit ``key`` within the memory budget (evicting what :func:`admit` says), then
        load it in the background; a refused on-demand load tells its waiters why."""
        record = self._records.get(key) or self._extra[key]
        admission = self._admission(record, on_demand, eager)
        if not admission.admitted:
            log.warning("not loading %s: %s", key, admission.reason)
            self._refused[key] = admission.reason
            self._demanded.discard(key)
            self.refusals[key.model] += 1
            return
        evicting = [self._evict(self._versions[k]) for k in admission.evict]
        loaded = LoadedVersion(
            record=record, state=VersionState.LOADING, since=datetime.now(UTC),
            on_demand=on_demand, memory_bytes=self._estimate(record),
        )  # fmt: skip
        loaded.idle.set()
        self._versions[key] = loaded
        self._spawn(self._load(loaded, evicting))

    def _admission(
        self, record: VersionRecord, on_demand: bool, eager: set[VersionKey]
    ) -> Admission:
        options = self._options
        if options.memory_budget is None and not on_demand:
            return Admission(True, (), "fits")  # an always version with no budget to keep
        residents = [
            Resident(
                key,
                loaded.memory_bytes or self._estimate(loaded.record),
                loaded.last_used,
                loaded.inflight,
                pinned=key in eager or not loaded.on_demand,
                loading=loaded.state is VersionState.LOADING,
            )
            for key, loaded in self._versions.items()
            if loaded.state in (VersionState.LOADING, VersionState.READY)
        ]
        return admit(
            self._estimate(record), residents, options.memory_budget, options.on_demand_max,
            pinned=not on_demand,
        )  # fmt: skip

    def _estimate(self, record: VersionRecord) -> int:
        """Memory a version will hold: what it measured last time, else its files' size."""
        return self._measured.get(record.digest) or max(record.size_bytes, 1 << 20)

    def _evict(self, loaded: LoadedVersion) -> asyncio.Task[None]:
        log.info("evicting %s (least recently used) to make room", loaded.key)
        self.evictions[loaded.key.model] += 1
        loaded.state = VersionState.DRAINING  # routes drop it in this very reconcile
        return self._spawn(self._unload(loaded))

    def _lazy(self) -> frozenset[str]:
        """Models whose aliases load on demand (computed once per registry snapshot)."""
        return self._lazy_models

    # -- loading on demand ----------------------------------------------------------------------

    def servable(self, model: str, ref: VersionRef) -> bool:
        """Whether ``ref`` can serve now or would load on demand (not FAILED, not refused)."""
        return self.can_serve(model, ref) or self._demandable(model, ref) is not None

    def _demandable(self, model: str, ref: VersionRef) -> VersionKey | None:
        """The version a request for ``ref`` should wait for, if it loads on demand: a
        registered version number nothing holds, or a lazy model's alias target."""
        if isinstance(ref, int):
            key = VersionKey(model, ref)
            if ref not in self._numbers.get(model, ()):
                return None
        else:
            alias = AliasKey(model, ref or DEFAULT_ALIAS)
            if alias in self._routes or model not in self._lazy_models:
                return None  # the common case: served now, or loaded eagerly
            key_or_none = self._targets.get(alias)
            if key_or_none is None:
                return None
            key = key_or_none
        if model in self._held:
            return None
        loaded = self._versions.get(key)
        if loaded is None:
            return key
        if loaded.state is VersionState.LOADING and key in self._demanded:
            return key
        if loaded.state is VersionState.DRAINING and loaded.on_demand:
            return key  # being evicted: loads again once it is gone
        return None

    def _arrived(self, model: str, ref: VersionRef, waiting: LoadedVersion) -> bool:
        """Whether a request waiting for ``waiting`` may go on: it is READY and, for an alias,
        routed; or it will not be (FAILED, evicted)."""
        if waiting.state is VersionState.LOADING:
            return False
        if waiting.state is not VersionState.READY or isinstance(ref, int):
            return True
        return AliasKey(model, ref or DEFAULT_ALIAS) in self._routes

    async def demand(self, model: str, ref: VersionRef, expires: float | None) -> None:
        """If ``ref`` names a version that loads on demand and is not READY, load it (within
        the memory budget) and wait until it is READY, until it FAILED, or until ``expires``
        (monotonic seconds; default: the load timeout). Returns at once for anything else:
        :meth:`resolve` then says what is wrong. Raises Overloaded when too many requests
        already wait, Unavailable when the budget refused the load, DeadlineExceeded when the
        load outlasts the request."""
        key = self._demandable(model, ref)
        if key is None:
            return
        limit = self._options.load_timeout_s * self._options.load_attempts + 5
        loaded = self._versions.get(key)
        if loaded is not None and loaded.state is VersionState.DRAINING:
            evicted = loaded
            try:
                await self._wait_until(
                    lambda: self._versions.get(key) is not evicted,
                    limit if expires is None else max(0.0, expires - time.monotonic()),
                )
            except TimeoutError:
                raise DeadlineExceeded(
                    f"model {model!r} version {key.version} was being evicted"
                ) from None
            loaded = self._versions.get(key)
        if loaded is not None and loaded.waiters >= self._options.cold_start_queue:
            raise Overloaded(
                f"model {model!r} version {key.version} is loading and "
                f"{loaded.waiters} requests already wait for it"
            )
        if loaded is None:
            if key not in self._records and key not in self._extra:
                self._extra[key] = await asyncio.to_thread(self._source.version, model, key.version)
            self._refused.pop(key, None)
            self._demanded.add(key)
            self.cold_starts[model] += 1
            log.info("loading %s on demand", key)
            await self._reconcile()
        waiting = self._versions.get(key)
        if waiting is None:
            raise Unavailable(self._refused.get(key, f"model {model!r} version {key.version} "
                                                     "could not be loaded"))  # fmt: skip
        timeout = limit if expires is None else max(0.0, expires - time.monotonic())
        waiting.waiters += 1
        try:
            await self._wait_until(lambda: self._arrived(model, ref, waiting), timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"model {model!r} version {key.version} is still loading on demand (a cold "
                f"start; it has been loading since {waiting.since:%H:%M:%S})"
            ) from None
        finally:
            waiting.waiters -= 1

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _set_state(
        self, loaded: LoadedVersion, state: VersionState, error: str | None = None
    ) -> None:
        loaded.state = state
        loaded.error = error
        loaded.since = datetime.now(UTC)
        async with self._changed:
            self._changed.notify_all()
        record = loaded.record
        try:
            await asyncio.to_thread(
                self._source.record_serving_state,
                self._options.replica,
                record.model,
                record.number,
                record.digest,
                state.value,
                error,
            )
        except RegistryUnavailable as exc:
            log.warning("could not record state %s of %s: %s", state.value, loaded.key, exc)
        except Exception:
            log.exception("could not record state %s of %s", state.value, loaded.key)

    async def _load(
        self, loaded: LoadedVersion, evicting: list[asyncio.Task[None]] | None = None
    ) -> None:
        """Load with bounded retries and back-off. Only transient failures (timeouts, unexpected
        exceptions such as I/O errors) are retried; a refused, tampered or failing version is
        FAILED at once. Whatever serves the alias keeps serving meanwhile."""
        record, key, options = loaded.record, loaded.key, self._options
        began = time.monotonic()
        await self._set_state(loaded, VersionState.LOADING)
        log.info("loading %s (%s)", key, record.digest)
        delay = options.retry_backoff_s
        try:
            if evicting:  # the memory they hold must be free before this load takes its own
                await asyncio.gather(*evicting, return_exceptions=True)
            for attempt in range(1, options.load_attempts + 1):
                try:
                    if options.memory_budget is not None:
                        async with self._load_gate:
                            runtime, metadata, report = await self._loader.load(record)
                    else:
                        runtime, metadata, report = await self._loader.load(record)
                except Exception as exc:
                    reason = failure_reason(exc)
                    if self._closed or not is_transient(exc) or attempt == options.load_attempts:
                        tries = f" (after {attempt} attempts)" if attempt > 1 else ""
                        await self._fail(loaded, reason + tries)
                        return
                    note = f"attempt {attempt}/{options.load_attempts} failed: {reason}"
                    log.warning("%s %s; retrying in %.1f s", key, note, delay)
                    await self._set_state(loaded, VersionState.LOADING, note)
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                break
            if self._closed or self._versions.get(key) is not loaded:
                await asyncio.to_thread(runtime.unload)
                return
            loaded.runtime, loaded.metadata = runtime, metadata
            loaded.load_seconds = time.monotonic() - began
            if report.memory_bytes is not None:
                loaded.memory_bytes = self._measured[record.digest] = report.memory_bytes
            if loaded.on_demand:
                self.cold_start_seconds.setdefault(key.model, Histogram(LOAD_BUCKETS)).observe(
                    loaded.load_seconds
                )
            loaded.deterministic = report.deterministic
            label = f"{record.model} v{record.number}"
            loaded.execution = (
                DecoupledExecution(
                    runtime.responses, self._pool, self._options.max_queue_size, label
                )
                if metadata.decoupled and isinstance(runtime, Responder)
                else execution_for(
                    record.manifest.batching, runtime.predict, self._pool,
                    self._options.max_queue_size, label,
                )
            )  # fmt: skip
            cache = record.manifest.cache
            if cache is not None and report.deterministic:
                loaded.cache = ResponseCache(cache)
            remark = None
            if not report.deterministic:
                remark = "non-deterministic: two runs of a warm-up example differed"
                log.warning("%s is %s", key, remark)
            await self._set_state(loaded, VersionState.READY, remark)
            log.info("%s is READY", key)
            await self._trim_local_copies()
            # Keep what loading allocated (framework modules, the model) out of the cyclic
            # collector's generations: a full collection over them stalled the event loop for
            # ~100 ms at a time under load (p99 130 ms instead of 9 ms in bench/throughput.py).
            gc.freeze()
        finally:
            self._demanded.discard(key)
            if not self._closed:
                await self._reconcile()

    async def note_workers(self) -> None:
        """Report isolated workers' restarts as a READY version's remark (``pitstop status``
        shows it): once per new restart, without moving the version's ``since``."""
        for loaded in list(self._versions.values()):
            restarts = getattr(loaded.runtime, "restarts", 0)
            if loaded.state is not VersionState.READY or not restarts:
                continue
            remark = (
                f"worker restarted {restarts}x; last: "
                f"{getattr(loaded.runtime, 'last_failure', None) or 'unknown'}"
            )
            if loaded.error == remark:
                continue
            loaded.error = remark
            record = loaded.record
            try:
                await asyncio.to_thread(
                    self._source.record_serving_state, self._options.replica, record.model,
                    record.number, record.digest, VersionState.READY.value, remark,
                )  # fmt: skip
            except Exception as exc:  # reported again at the next restart or outage end
                log.warning("could not record %s's worker restart: %s", loaded.key, exc)

    async def _trim_local_copies(self) -> None:
        """Keep a remote store's host cache within its bound, sparing what this process holds."""
        held = {v.record.digest for v in self._versions.values()}
        try:
            await asyncio.to_thread(self._source.trim_local_copies, held)
        except Exception:
            log.exception("could not trim the artifact cache")

    async def _fail(self, loaded: LoadedVersion, error: str) -> None:
        log.error("%s FAILED: %s", loaded.key, error)
        self.load_failures[loaded.key.model] += 1
        await self._set_state(loaded, VersionState.FAILED, error)

    async def _unload(self, loaded: LoadedVersion) -> None:
        await self._set_state(loaded, VersionState.DRAINING)
        try:
            async with asyncio.timeout(self._options.drain_timeout_s):
                await loaded.idle.wait()
        except TimeoutError:
            log.warning("%s still had %d requests after drain", loaded.key, loaded.inflight)
        execution, loaded.execution = loaded.execution, None
        if execution is not None:
            await execution.close()
        loaded.cache = None
        runtime, loaded.runtime = loaded.runtime, None
        if runtime is not None:
            try:
                await asyncio.to_thread(runtime.unload)
            except Exception:
                log.exception("unloading %s raised", loaded.key)
            await asyncio.to_thread(release_memory)
        if self._versions.get(loaded.key) is loaded:
            del self._versions[loaded.key]
        await self._set_state(loaded, VersionState.UNLOADED)
        log.info("%s unloaded", loaded.key)
        await self._trim_local_copies()
        await self._reconcile()

    # -- repository extension -------------------------------------------------------------------

    def repository_index(self) -> list[RepositoryEntry]:
        """Every version this server targets or holds, with its V2 repository state."""
        return repository_rows(self._targets.values(), self._versions, self._held)

    async def load_model(self, model: str) -> None:
        """Serve ``model`` again (after an unload), retry its failed versions, and wait until
        each of its targets is READY or FAILED. Raises Unavailable naming a failure."""
        try:
            self.require_model(model)
        except ModelNotFound as exc:
            raise ModelNotFound(f"failed to load {model!r}: {exc}") from None
        self._held.discard(model)
        for key, loaded in list(self._versions.items()):
            if key.model == model and loaded.state is VersionState.FAILED:
                del self._versions[key]
        targets = {v for a, v in self._targets.items() if a.model == model}

        def settled() -> bool:
            routed = set(self._routes.values())
            return all(
                key in routed
                or (key in self._versions and self._versions[key].state is VersionState.FAILED)
                for key in targets
            )

        await self._reconcile()
        await self._wait_until(settled, self._options.load_timeout_s * 4 + 5)
        failed = [
            f"v{k.version}: {self._versions[k].error}"
            for k in sorted(targets)
            if k in self._versions and self._versions[k].state is VersionState.FAILED
        ]
        if failed:
            raise Unavailable(f"model {model!r} failed to load: {'; '.join(failed)}")

    async def unload_model(self, model: str) -> None:
        """Stop serving ``model`` on this server until :meth:`load_model` (or a restart).
        In-flight requests finish first; the registry is not changed."""
        self.require_model(model)
        self._held.add(model)
        self._routes = {a: v for a, v in self._routes.items() if a.model != model}
        await self._reconcile()
        await self._wait_until(
            lambda: not any(k.model == model for k in self._versions),
            self._options.drain_timeout_s + self._options.load_timeout_s + 5,
        )

    async def _wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def close(self) -> None:
        """Stop reconciling, cancel background work and unload every version."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for loaded in list(self._versions.values()):
            if loaded.execution is not None:
                await loaded.execution.close()
                loaded.execution = None
            if loaded.runtime is not None:
                await asyncio.to_thread(loaded.runtime.unload)
                loaded.runtime = None
        self._versions.clear()
        self._routes = {}
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Known:
    """The versions ``resolve`` may call known but not loaded: what aliases and policies name,
    and every registered version (each loads on demand)."""

    __slots__ = ("_manager",)

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def __contains__(self, key: object) -> bool:
        manager = self._manager
        return isinstance(key, VersionKey) and (
            key in manager._records or key.version in manager._numbers.get(key.model, ())
        )
