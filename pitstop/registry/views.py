"""Read side of the catalog: lookups by name and number, and rows turned into frozen records.

Every function works inside the caller's transaction and returns no SQLAlchemy objects except
the ``*_row`` lookups, which stay inside the registry.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from pitstop.errors import ModelNotFound, VersionNotFound
from pitstop.protocol.reference import natural
from pitstop.registry.digest import FileEntry
from pitstop.registry.manifest import ModelManifest
from pitstop.registry.notices import CHANNEL
from pitstop.registry.policy import TrafficPolicy
from pitstop.registry.records import ModelRecord, RegistrySnapshot, TokenRecord, VersionRecord
from pitstop.registry.schema import (
    AliasRow,
    CatalogStateRow,
    ModelRow,
    PolicyRow,
    TokenRow,
    VersionRow,
)


def model_row(session: Session, name: str) -> ModelRow:
    """The model called ``name``; :class:`ModelNotFound` if there is none."""
    row = session.scalar(select(ModelRow).where(ModelRow.name == name))
    if row is None:
        raise ModelNotFound(f"model {name!r} not found")
    return row


def version_row(session: Session, model: ModelRow, number: int) -> VersionRow:
    """Version ``number`` of ``model``; :class:`VersionNotFound` if there is none."""
    row = session.scalar(
        select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.number == number)
    )
    if row is None:
        raise VersionNotFound(f"model {model.name!r} has no version {number}")
    return row


def latest_number(session: Session, model: ModelRow) -> int | None:
    """The highest version number of ``model``, ``None`` before its first version."""
    return session.scalar(
        select(func.max(VersionRow.number)).where(VersionRow.model_id == model.id)
    )


def bump_generation(session: Session) -> None:
    """The first statement of every catalog change: it takes the ``catalog_state`` row lock,
    which serialises writers, and moves the generation servers poll. On PostgreSQL it also
    queues a change notice (see :mod:`pitstop.registry.notices`), sent when the change
    commits."""
    bump = (
        update(CatalogStateRow)
        .where(CatalogStateRow.id == 1)
        .values(generation=CatalogStateRow.generation + 1)
    )
    if session.get_bind().dialect.name != "postgresql":
        session.execute(bump)
        return
    generation = session.execute(bump.returning(CatalogStateRow.generation)).scalar_one()
    session.execute(select(func.pg_notify(CHANNEL, str(generation))))


def current_generation(session: Session) -> int:
    return session.execute(select(CatalogStateRow.generation)).scalar_one()


def version_record(model: str, row: VersionRow) -> VersionRecord:
    return VersionRecord(
        model=model,
        number=row.number,
        digest=row.digest,
        runtime=row.runtime,
        manifest=ModelManifest.from_json(row.manifest),
        files=tuple(FileEntry(path, sha256, size) for path, sha256, size in row.files),
        size_bytes=row.size_bytes,
        meta=dict(row.meta),
        trust_pickle=row.trust_pickle,
        trust_code=row.trust_code,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def read_models(session: Session) -> list[ModelRecord]:
    """Every model sorted by name, with its latest number, aliases and version count."""
    stats = {
        model_id: (latest, count)
        for model_id, latest, count in session.execute(
            select(VersionRow.model_id, func.max(VersionRow.number), func.count()).group_by(
                VersionRow.model_id
            )
        )
    }
    aliases: dict[int, dict[str, int]] = {}
    for alias in session.scalars(select(AliasRow).order_by(AliasRow.name)):
        aliases.setdefault(alias.model_id, {})[alias.name] = alias.version_number
    return [
        ModelRecord(
            name=row.name,
            created_at=row.created_at,
            latest_version=stats.get(row.id, (None, 0))[0],
            aliases=aliases.get(row.id, {}),
            version_count=stats.get(row.id, (None, 0))[1],
        )
        for row in session.scalars(select(ModelRow).order_by(ModelRow.name))
    ]


def read_snapshot(session: Session) -> RegistrySnapshot:
    """Generation, every model's aliases and latest version; consistent if the transaction is."""
    generation = current_generation(session)
    names = {row.id: row.name for row in session.scalars(select(ModelRow))}
    latest_numbers = select(VersionRow.model_id, func.max(VersionRow.number)).group_by(
        VersionRow.model_id
    )
    latest_of: dict[int, int] = {
        model_id: number for model_id, number in session.execute(latest_numbers)
    }
    alias_rows = list(session.scalars(select(AliasRow).order_by(AliasRow.name)))
    policies = {
        row.model_id: TrafficPolicy.from_json(row.policy)
        for row in session.scalars(select(PolicyRow))
    }
    wanted: dict[int, set[int]] = {model_id: {number} for model_id, number in latest_of.items()}
    for alias in alias_rows:
        wanted.setdefault(alias.model_id, set()).add(alias.version_number)
    for model_id, policy in policies.items():
        numbers = {n for n in map(natural, policy.targets()) if n is not None}
        wanted.setdefault(model_id, set()).update(numbers)
    every: dict[str, list[int]] = {}
    for model_id, number in session.execute(
        select(VersionRow.model_id, VersionRow.number).order_by(VersionRow.number)
    ):
        every.setdefault(names[model_id], []).append(number)
    records: dict[tuple[int, int], VersionRecord] = {}
    for model_id, numbers in wanted.items():
        query = select(VersionRow).where(
            VersionRow.model_id == model_id, VersionRow.number.in_(numbers)
        )
        for row in session.scalars(query):
            records[(model_id, row.number)] = version_record(names[model_id], row)
    models: dict[str, dict[str, VersionRecord]] = {name: {} for name in sorted(names.values())}
    for alias in alias_rows:
        models[names[alias.model_id]][alias.name] = records[(alias.model_id, alias.version_number)]
    latest = {
        names[model_id]: records[(model_id, number)]
        for model_id, number in sorted(latest_of.items(), key=lambda item: names[item[0]])
    }
    pinned: dict[str, dict[int, VersionRecord]] = {}
    for model_id, policy in policies.items():
        for number in sorted(n for n in map(natural, policy.targets()) if n is not None):
            if (model_id, number) in records:
                pinned.setdefault(names[model_id], {})[number] = records[(model_id, number)]
    return RegistrySnapshot(
        generation,
        models,
        latest,
        policies={names[model_id]: policy for model_id, policy in policies.items()},
        pinned=pinned,
        tokens=tuple(
            token_record(row) for row in session.scalars(select(TokenRow).order_by(TokenRow.name))
        ),
        numbers={name: tuple(numbers) for name, numbers in every.items()},
    )


def token_record(row: TokenRow) -> TokenRecord:
    """A token row as the record servers and the CLI read."""
    return TokenRecord(
        row.name, row.sha256, tuple(row.scopes), row.created_at, row.created_by,
        expires_at=row.expires_at, rate_limit=row.rate_limit, burst=row.burst,
    )  # fmt: skip
