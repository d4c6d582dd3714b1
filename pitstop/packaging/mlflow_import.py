"""``pitstop import mlflow`` and ``pitstop follow mlflow``: versions of an MLflow registry become
pitstop versions, and MLflow's aliases move pitstop's.

An imported version is the MLflow model folder as MLflow stored it, pushed like any folder
(content-addressed: importing it twice is the same version; the ``MLmodel`` is translated as
:mod:`pitstop.registry.mlmodel` says; the input example becomes the warm-up), validated by
loading it first, with its lineage in the version's meta under ``mlflow.*`` (tracking URI,
model, version, run id, source, user, tags).

Following is a loop of :func:`plan` (a pure decision over what MLflow's aliases point at, what is
imported, and where pitstop's aliases point) and its steps. A version that cannot be imported
(it fails to load, say) is remembered and not retried: pitstop's alias stays where it was, so
what serves keeps serving, and the failure is reported once.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from pitstop.errors import InvalidInput, ModelNotFound, NotFound, PitstopError, Unavailable
from pitstop.packaging.mlflow_tracking import MlflowVersion
from pitstop.registry import PushResult, Registry
from pitstop.registry.manifest import read_manifest
from pitstop.serving.warmup import load_and_validate

log = logging.getLogger(__name__)

MAX_TAGS: Final = 64
MAX_VALUE: Final = 1024


class Tracking(Protocol):
    """An MLflow registry as importing and following read it (:class:`TrackingServer`).

    ``by_alias`` raises NotFound when the alias is not set; ``download`` raises Unavailable
    when the server or its store cannot be reached (worth retrying), and any other pitstop
    error when the version itself is at fault."""

    uri: str

    def by_alias(self, name: str, alias: str) -> MlflowVersion: ...

    def versions(self, name: str) -> list[MlflowVersion]: ...

    def download(self, version: MlflowVersion, target: Path) -> None: ...


@dataclass(frozen=True)
class Trust:
    pickle: bool = False
    code: bool = False


def lineage(version: MlflowVersion, tracking_uri: str) -> dict[str, str]:
    """The ``mlflow.*`` meta of an imported version."""
    meta = {
        "mlflow.tracking_uri": tracking_uri,
        "mlflow.model": version.name,
        "mlflow.version": version.version,
        "mlflow.source": version.source,
    }
    if version.run_id:
        meta["mlflow.run_id"] = version.run_id
    if version.user:
        meta["mlflow.user"] = version.user
    if version.description:
        meta["mlflow.description"] = version.description[:MAX_VALUE]
    for key in sorted(version.tags)[:MAX_TAGS]:
        meta[f"mlflow.tag.{key}"] = version.tags[key][:MAX_VALUE]
    return meta


def imported(registry: Registry, name: str, tracking_uri: str) -> dict[str, int]:
    """MLflow version → pitstop version number, for versions of ``name`` imported from that
    tracking server (any MLflow model name)."""
    try:
        rows = registry.versions(name)
    except ModelNotFound:
        return {}
    found: dict[str, int] = {}
    for row in rows:
        if row.meta.get("mlflow.tracking_uri") == tracking_uri and "mlflow.version" in row.meta:
            found.setdefault(row.meta["mlflow.version"], row.number)
    return found


def import_version(
    registry: Registry,
    tracking: Tracking,
    version: MlflowVersion,
    *,
    name: str,
    aliases: Sequence[str] = (),
    actor: str,
    reason: str | None = None,
    trust: Trust = Trust(),
    validate: bool = True,
) -> PushResult:
    """Download ``version``, load and warm it up (unless not ``validate``), push it as a
    version of ``name`` with its lineage."""
    if version.status != "READY":
        raise InvalidInput(
            f"MLflow {version.name}/{version.version} is {version.status}, not READY"
        )
    with tempfile.TemporaryDirectory(prefix="pitstop-mlflow-") as workdir:
        folder = Path(workdir) / "model"
        tracking.download(version, folder)
        manifest = read_manifest(folder)
        if validate:
            runtime, _metadata, _report = load_and_validate(
                folder, manifest, trust_pickle=trust.pickle, trust_code=trust.code,
                threads=1, runs=1,
            )  # fmt: skip
            runtime.unload()
        return registry.push(
            folder, name=name, aliases=aliases, meta=lineage(version, tracking.uri),
            actor=actor, reason=reason or f"import from MLflow {version.name}/{version.version}",
            trust_pickle=trust.pickle, trust_code=trust.code,
        )  # fmt: skip


# -- following --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Keep pitstop's ``alias`` where MLflow's ``mlflow_alias`` points."""

    mlflow_alias: str
    alias: str

    @classmethod
    def parse(cls, text: str) -> Rule:
        source, sep, target = text.partition("=")
        if not source or (sep and not target):
            raise InvalidInput(f"--alias {text!r}: expected MLFLOW_ALIAS=PITSTOP_ALIAS")
        return cls(source, target or source)


@dataclass(frozen=True)
class Import:
    mlflow_version: str


@dataclass(frozen=True)
class Move:
    alias: str
    version: int
    mlflow_alias: str
    mlflow_version: str


Step = Import | Move


def plan(
    rules: Sequence[Rule],
    targets: Mapping[str, str | None],
    known: Mapping[str, int],
    aliases: Mapping[str, int],
    failed: frozenset[str] = frozenset(),
    fresh: Sequence[str] = (),
) -> list[Step]:
    """What to do now. ``targets``: MLflow alias → the MLflow version it points at (None: the
    alias does not exist, so pitstop's stays); ``known``: MLflow version → imported pitstop
    version; ``aliases``: pitstop's aliases; ``failed``: MLflow versions that could not be
    imported (never retried, never pointed at); ``fresh``: versions to import ahead of any alias
    (see :func:`fresh_versions`). Imports come first, each once."""
    steps: list[Step] = []
    wanted: list[str] = [v for v in dict.fromkeys(fresh) if v not in known and v not in failed]
    for rule in rules:
        target = targets.get(rule.mlflow_alias)
        if target is None or target in failed:
            continue
        if target not in known:
            if target not in wanted:
                wanted.append(target)
            continue
        if aliases.get(rule.alias) != known[target]:
            steps.append(Move(rule.alias, known[target], rule.mlflow_alias, target))
    return [*(Import(v) for v in wanted), *steps]


def fresh_versions(
    ready: Sequence[str], known: Mapping[str, int], targets: Mapping[str, str | None]
) -> list[str]:
    """The READY MLflow versions newer than every version imported or aliased so far: what a
    pipeline registered since, to import before it is promoted, so that promotion is only an
    alias move. Nothing while nothing is imported or aliased (an old registry's history is
    never imported wholesale)."""
    seen = [int(v) for v in [*known, *(t for t in targets.values() if t)] if v.isdigit()]
    if not seen:
        return []
    floor = max(seen)
    return sorted((v for v in ready if v.isdigit() and int(v) > floor), key=int)


class Stop(Protocol):
    """When :meth:`Follower.run` stops: ``threading.Event`` is one."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class Follower:
    """Polls one MLflow model's aliases and applies :func:`plan` to one pitstop model."""

    tracking: Tracking
    registry: Registry
    mlflow_model: str
    name: str
    rules: Sequence[Rule]
    actor: str
    trust: Trust = Trust()
    report: Callable[[str], None] = log.info
    prefetch: bool = True
    """Import new versions as they appear (:func:`fresh_versions`), not only once aliased."""
    failed: set[str] = field(default_factory=set)

    def tick(self) -> list[Step]:
        """One poll: read MLflow's aliases, import what is new, move pitstop's aliases. Returns
        the steps taken (failed imports excluded); raises only when MLflow cannot be read."""
        versions: dict[str, MlflowVersion] = {}
        targets: dict[str, str | None] = {}
        for rule in self.rules:
            if rule.mlflow_alias in targets:
                continue
            try:
                version = self.tracking.by_alias(self.mlflow_model, rule.mlflow_alias)
            except NotFound:  # no such alias (yet): pitstop's stays where it is
                targets[rule.mlflow_alias] = None
                continue
            if version.status != "READY":  # still registering: look again next time
                targets[rule.mlflow_alias] = None
                continue
            targets[rule.mlflow_alias] = version.version
            versions[version.version] = version
        registry = self.registry
        known = imported(registry, self.name, self.tracking.uri)
        fresh: list[str] = []
        if self.prefetch:
            listed = [v for v in self.tracking.versions(self.mlflow_model) if v.status == "READY"]
            versions.update((v.version, v) for v in listed if v.version not in versions)
            fresh = fresh_versions([v.version for v in listed], known, targets)
        done: list[Step] = []
        failed = frozenset(self.failed)
        aliases = _aliases(registry, self.name)
        for step in plan(self.rules, targets, known, aliases, failed, fresh):
            if isinstance(step, Import):
                version = versions[step.mlflow_version]
                try:
                    result = import_version(
                        registry, self.tracking, version, name=self.name, actor=self.actor,
                        trust=self.trust,
                    )  # fmt: skip
                except Unavailable as exc:  # the tracking server or the store: retried next tick
                    self.report(
                        f"MLflow {self.mlflow_model}/{step.mlflow_version}: import interrupted, "
                        f"retrying next time: {exc}"
                    )
                    continue
                except PitstopError as exc:  # the version itself: never retried
                    self.failed.add(step.mlflow_version)
                    self.report(
                        f"MLflow {self.mlflow_model}/{step.mlflow_version} cannot be imported, "
                        f"so no alias moves to it: {exc}"
                    )
                    continue
                known[step.mlflow_version] = result.version.number
                self.report(
                    f"imported MLflow {self.mlflow_model}/{step.mlflow_version} as "
                    f"{self.name} v{result.version.number}"
                )
                done.append(step)
        # Imports may have made moves possible: decide again over what is known now.
        failed = frozenset(self.failed)
        for step in plan(self.rules, targets, known, _aliases(registry, self.name), failed):
            if not isinstance(step, Move):
                continue
            version = versions[step.mlflow_version]
            reason = (
                f"MLflow {self.mlflow_model}@{step.mlflow_alias} → version {step.mlflow_version}"
                f" (run {version.run_id or '-'}, by {version.user or 'unknown'})"
            )
            registry.set_alias(self.name, step.alias, step.version, actor=self.actor, reason=reason)
            self.report(f"{self.name}: {step.alias} → v{step.version} ({reason})")
            done.append(step)
        return done

    def run(self, interval_s: float, stop: Stop) -> None:
        """Tick every ``interval_s`` until ``stop`` is set; a tick that fails (MLflow or the
        registry unreachable) is reported and retried at the next one."""
        while not stop.is_set():
            try:
                self.tick()
            except PitstopError as exc:
                self.report(f"follow {self.mlflow_model}: {exc}; retrying in {interval_s:g}s")
            except Exception as exc:  # a bug or a driver error: keep following, say what broke
                log.exception("follow %s: tick failed", self.mlflow_model)
                self.report(f"follow {self.mlflow_model}: unexpected {exc!r}; retrying")
            stop.wait(interval_s)


def _aliases(registry: Registry, name: str) -> dict[str, int]:
    try:
        return registry.aliases(name)
    except ModelNotFound:
        return {}
