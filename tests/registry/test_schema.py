"""The migrations create exactly the tables the code maps, on every supported database."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from pitstop.registry import Registry
from pitstop.registry.schema import Base


def test_migrations_match_the_mapped_schema(db_url: str, tmp_path: Path) -> None:
    Registry.open(db_url, tmp_path / "artifacts").close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            assert context.get_current_revision() == "0009"
            tables = set(inspect(connection).get_table_names())
            assert {"models", "versions", "aliases", "audit_events", "serving_states"} <= tables
    finally:
        engine.dispose()


def test_opening_twice_is_a_no_op(db_url: str, tmp_path: Path) -> None:
    with Registry.open(db_url, tmp_path / "artifacts") as registry:
        generation = registry.generation()
    with Registry.open(db_url, tmp_path / "artifacts") as registry:
        assert registry.generation() == generation
