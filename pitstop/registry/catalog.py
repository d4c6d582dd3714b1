"""The catalog: what models, versions and aliases exist, and how they changed.

:class:`Registry` is the only entry point the rest of pitstop uses. It persists in SQLite or
PostgreSQL and keeps files in an :class:`~pitstop.registry.store.ArtifactStore`; it never loads a
model. Every method is blocking (callers on an event loop run it in a thread), safe to call from
several threads and processes at once, and runs in one short transaction.

Every catalog change takes the single ``catalog_state`` row first and increments its generation
in the same transaction. That serialises writers (so version numbers are allocated without
gaps or races) and lets a server notice any change by polling one number.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pitstop.errors import Conflict, InvalidInput, VersionNotFound
from pitstop.protocol.reference import natural
from pitstop.registry.aliases import move_alias, remove_alias
from pitstop.registry.audit import AuditEvent, append_event, read_events
from pitstop.registry.database import open_engine, transaction, upgrade
from pitstop.registry.delivery import Delivery
from pitstop.registry.digest import FileEntry, list_files, scan
from pitstop.registry.manifest import ModelManifest, read_manifest
from pitstop.registry.names import LATEST, check_actor, check_alias, check_meta, check_name
from pitstop.registry.notices import ChangeNotices, can_listen
from pitstop.registry.outcomes import Outcomes
from pitstop.registry.records import (
    ModelRecord,
    PushResult,
    RegistrySnapshot,
    VersionRecord,
)
from pitstop.registry.references import References
from pitstop.registry.replicas import Replicas
from pitstop.registry.runs import Runs
from pitstop.registry.schema import (
    AliasRow,
    ModelRow,
    VersionRow,
)
from pitstop.registry.serving_state import ServingState
from pitstop.registry.signatures import Signatures
from pitstop.registry.step_windows import StepWindows
from pitstop.registry.store import (
    ArtifactStore,
    LocalArtifactStore,
    fetch_verified,
    open_store,
    stored_progress,
)
from pitstop.registry.tokens import Tokens
from pitstop.registry.views import (
    bump_generation,
    current_generation,
    latest_number,
    model_row,
    read_models,
    read_snapshot,
    version_record,
    version_row,
)
from pitstop.settings import Settings

_PUSH_ATTEMPTS: Final = 5

Clock = Callable[[], datetime]


class Registry:
    """The model catalog. Build it with :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, engine: Engine, store: ArtifactStore, clock: Clock) -> None:
        """Prefer :meth:`open`, which also migrates the database."""
        self._engine = engine
        self._store = store
        self._clock = clock
        self.delivery = Delivery(engine, clock)
        """Traffic policies, rollouts and leases (:mod:`pitstop.registry.delivery`)."""
        self.references = References(engine, clock)
        """Reference profiles for drift monitoring (:mod:`pitstop.registry.references`)."""
        self.tokens = Tokens(engine, clock)
        """Bearer tokens every replica accepts (:mod:`pitstop.registry.tokens`)."""
        self.step_windows = StepWindows(engine, clock)
        """What each replica observed of running rollouts (:mod:`.step_windows`)."""
        self.replicas = Replicas(engine, clock)
        """Servers' heartbeats and applied generations (:mod:`pitstop.registry.replicas`)."""
        self.runs = Runs(engine, clock)
        """Batch runs in the audit history (:mod:`pitstop.registry.runs`)."""
        self.signatures = Signatures(engine, clock)
        """Signatures of versions and trusted-key records (:mod:`.signatures`)."""
        self.outcomes = Outcomes(engine, clock)
        """Recent predictions and the feedback joined to them (:mod:`.outcomes`)."""

    @classmethod
    def open(
        cls,
        url: str,
        artifact_root: Path | None = None,
        *,
        store: ArtifactStore | None = None,
        clock: Clock | None = None,
    ) -> Registry:
        """Connect to the registry at ``url`` and migrate it to the newest schema.

        Files live in a :class:`LocalArtifactStore` under ``artifact_root``, or in ``store``
        (give exactly one). A SQLite file's folder is created if needed. Several processes may
        open the same database at once. ``clock`` returns tz-aware now (tests fake it).
        """
        if (artifact_root is None) == (store is None):
            raise ValueError("give exactly one of artifact_root and store")
        engine = open_engine(url)
        try:
            upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(
            engine,
            store or LocalArtifactStore(artifact_root or Path()),
            clock or (lambda: datetime.now(UTC)),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The registry and artifact store ``settings`` name (``PITSTOP_REGISTRY_URL``,
        ``PITSTOP_ARTIFACTS_URL``, ...), as ``pitstop serve`` and the CLI open them."""
        store = open_store(
            settings.artifacts_url,
            settings.resolved_artifact_root(),
            settings.resolved_cache_dir(),
            settings.cache_max_bytes,
            settings.s3_addressing_style,
        )
        return cls.open(settings.resolved_registry_url(), store=store)

    def close(self) -> None:
        """Release the database connections. The registry is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- changes -------------------------------------------------------------------------------

    def push(
        self,
        source: Path,
        *,
        name: str,
        aliases: Sequence[str] = (),
        meta: Mapping[str, str] | None = None,
        actor: str,
        trust_pickle: bool = False,
        trust_code: bool = False,
        reason: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> PushResult:
        """Register the model folder ``source`` as the next version of model ``name``.

        Validates the manifest (:class:`InvalidInput` naming the field), hashes and stores the
        files, creates the model if new, and points each of ``aliases`` at the version; every
        change is audited under ``actor`` with ``reason``. ``progress(done, total)`` reports
        bytes hashed. Content already registered for this model returns that version with
        ``created=False`` (aliases are still applied; versions, meta included, never change);
        :class:`Conflict` if it was registered with different trust flags. ``progress`` runs
        twice over the bytes: hashing, then storing (copying or uploading).
        """
        check_name("model name", name)
        for alias in aliases:
            check_alias(alias)
        meta = check_meta(meta or {})
        check_actor(actor)
        manifest = read_manifest(source)
        total = sum(size for _, _, size in list_files(source))
        digest, entries = scan(
            source, None if progress is None else lambda n: progress(n, 2 * total)
        )
        self._store.put(
            source, digest, entries, None if progress is None else stored_progress(progress, total)
        )
        for attempt in range(_PUSH_ATTEMPTS):
            try:
                with transaction(self._engine, write=True) as session:
                    return self._record_push(
                        session, name, digest, entries, manifest, aliases, meta,
                        actor, trust_pickle, trust_code, reason,
                    )  # fmt: skip
            except IntegrityError:
                # Writers are serialised by the generation row, so this only happens against a
                # writer that bypasses it (an older pitstop); the next attempt sees its rows.
                if attempt == _PUSH_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _record_push(
        self,
        session: Session,
        name: str,
        digest: str,
        entries: tuple[FileEntry, ...],
        manifest: ModelManifest,
        aliases: Sequence[str],
        meta: dict[str, str],
        actor: str,
        trust_pickle: bool,
        trust_code: bool,
        reason: str | None,
    ) -> PushResult:
        now = self._clock()
        bump_generation(session)
        model = session.scalar(select(ModelRow).where(ModelRow.name == name))
        if model is None:
            model = ModelRow(name=name, created_at=now, created_by=actor)
            session.add(model)
            session.flush()
            append_event(
                session, at=now, actor=actor, action="model.create", model=name,
                after={"name": name}, reason=reason,
            )  # fmt: skip
        row = session.scalar(
            select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.digest == digest)
        )
        created = row is None
        if row is None:
            latest = latest_number(session, model)
            row = VersionRow(
                model_id=model.id,
                number=(latest or 0) + 1,
                digest=digest,
                runtime=manifest.runtime,
                manifest=manifest.to_json(),
                files=[[entry.path, entry.sha256, entry.size] for entry in entries],
                size_bytes=sum(entry.size for entry in entries),
                meta=meta,
                trust_pickle=trust_pickle,
                trust_code=trust_code,
                created_at=now,
                created_by=actor,
            )
            session.add(row)
            session.flush()
            append_event(
                session, at=now, actor=actor, action="version.create", model=name,
                version=row.number, reason=reason,
                after={
                    "number": row.number, "digest": digest, "runtime": manifest.runtime,
                    "meta": meta, "trust_pickle": trust_pickle, "trust_code": trust_code,
                },
            )  # fmt: skip
        elif (row.trust_pickle, row.trust_code) != (trust_pickle, trust_code):
            raise Conflict(
                f"model {name!r} already holds this content as v{row.number}, registered with "
                f"trust_pickle={row.trust_pickle} and trust_code={row.trust_code}; versions are "
                "immutable, so push it again with the same flags"
            )
        changed = created
        for alias in dict.fromkeys(aliases):
            changed |= move_alias(
                session, model, alias, row.number, actor=actor, reason=reason, now=now
            )
        result = PushResult(version_record(name, row), created)
        if not changed:
            # Nothing happened, so the generation must not move either.
            session.rollback()
        return result

    def set_alias(
        self, model: str, alias: str, version: int, *, actor: str, reason: str | None = None
    ) -> None:
        """Point ``alias`` at ``version`` of ``model`` (audited ``alias.set``).

        :class:`VersionNotFound` if the version does not exist; nothing happens (and nothing is
        audited) when the alias already points there.
        """
        check_alias(alias)
        check_actor(actor)
        with transaction(self._engine, write=True) as session:
            bump_generation(session)
            row = model_row(session, model)
            version_row(session, row, version)
            now = self._clock()
            if not move_alias(session, row, alias, version, actor=actor, reason=reason, now=now):
                session.rollback()

    def delete_alias(
        self, model: str, alias: str, *, actor: str, reason: str | None = None
    ) -> None:
        """Remove ``alias`` (audited ``alias.delete``); :class:`VersionNotFound` if absent."""
        check_actor(actor)
        with transaction(self._engine, write=True) as session:
            bump_generation(session)
            remove_alias(
                session, model_row(session, model), alias, actor=actor, reason=reason,
                now=self._clock(),
            )  # fmt: skip

    # -- queries -------------------------------------------------------------------------------

    def models(self) -> list[ModelRecord]:
        """Every model, sorted by name."""
        with transaction(self._engine, write=False, consistent=True) as session:
            return read_models(session)

    def versions(self, model: str) -> list[VersionRecord]:
        """Every version of ``model``, newest first; :class:`ModelNotFound` if unknown."""
        with transaction(self._engine, write=False) as session:
            row = model_row(session, model)
            query = (
                select(VersionRow)
                .where(VersionRow.model_id == row.id)
                .order_by(VersionRow.number.desc())
            )
            return [version_record(model, version) for version in session.scalars(query)]

    def version(self, model: str, ref: str | int) -> VersionRecord:
        """The version ``ref`` names: a number (``3`` or ``"3"``), an alias, or ``"latest"``.

        Raises :class:`ModelNotFound` or :class:`VersionNotFound` saying what is missing.
        """
        with transaction(self._engine, write=False) as session:
            row = model_row(session, model)
            if isinstance(ref, int) and not isinstance(ref, bool):
                number = ref
            elif isinstance(ref, str) and natural(ref) is not None:
                number = int(ref)
            elif ref == LATEST:
                latest = latest_number(session, row)
                if latest is None:
                    raise VersionNotFound(f"model {model!r} has no versions yet")
                number = latest
            elif isinstance(ref, str):
                alias = session.get(AliasRow, (row.id, ref))
                if alias is None:
                    raise VersionNotFound(f"model {model!r} has no alias {ref!r}")
                number = alias.version_number
            else:
                raise InvalidInput(f"version reference must be a number or a name, got {ref!r}")
            return version_record(model, version_row(session, row, number))

    def aliases(self, model: str) -> dict[str, int]:
        """Alias name → version number for ``model``; :class:`ModelNotFound` if unknown."""
        with transaction(self._engine, write=False) as session:
            row = model_row(session, model)
            query = select(AliasRow).where(AliasRow.model_id == row.id).order_by(AliasRow.name)
            return {alias.name: alias.version_number for alias in session.scalars(query)}

    def history(
        self,
        model: str | None = None,
        *,
        limit: int | None = None,
        since: datetime | None = None,
    ) -> list[AuditEvent]:
        """Audit events newest first, optionally of one model, at or after ``since`` (tz-aware),
        at most ``limit``. An unknown model simply has no history."""
        with transaction(self._engine, write=False) as session:
            return read_events(session, model, limit=limit, since=since)

    def listen(self, on_change: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``on_change`` (from another thread) whenever the catalog changes, and after
        every reconnect; returns the function that stops listening. None when the database
        cannot announce changes (SQLite): poll :meth:`generation` instead."""
        url = self._engine.url.render_as_string(hide_password=False)
        if not can_listen(url):
            return None
        return ChangeNotices(url, on_change).start().stop

    def generation(self) -> int:
        """A number that increases with every catalog change (versions, aliases). One cheap
        query, meant to be polled. Serving states are not catalog changes and do not move it."""
        with transaction(self._engine, write=False) as session:
            return current_generation(session)

    def snapshot(self) -> RegistrySnapshot:
        """Every model's aliases and latest version as full records, read consistently."""
        with transaction(self._engine, write=False, consistent=True) as session:
            return read_snapshot(session)

    def fetch(self, record: VersionRecord, progress: Callable[[int], None] | None = None) -> Path:
        """A local folder with the version's files, each re-verified against the digest.

        Raises :class:`~pitstop.errors.ArtifactIntegrityError` naming the file that is missing,
        unexpected or changed. The folder is shared and read-only: never write into it.
        ``progress`` gets the bytes verified so far.
        """
        return fetch_verified(self._store, record, progress)

    def trim_local_copies(self, keep: Collection[str]) -> None:
        """See :meth:`ArtifactStore.trim_local_copies`."""
        self._store.trim_local_copies(keep)

    # -- serving states (kept with the replicas: registry/replicas.py) -------------------------

    def record_serving_state(
        self, replica: str, model: str, version: int, digest: str, state: str,
        error: str | None = None,
    ) -> None:  # fmt: skip
        """See :meth:`Replicas.record_state`."""
        self.replicas.record_state(replica, model, version, digest, state, error)

    def serving_states(self, model: str | None = None) -> list[ServingState]:
        """See :meth:`Replicas.states`."""
        return self.replicas.states(model)

    def clear_serving_states(self, replica: str) -> None:
        """See :meth:`Replicas.clear_states`."""
        self.replicas.clear_states(replica)
