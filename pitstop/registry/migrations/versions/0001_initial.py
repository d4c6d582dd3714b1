"""Initial registry: models, versions, aliases, audit events, serving states, generation.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMP = sa.DateTime(timezone=True)
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), autoincrement=True),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("runtime", sa.String(128), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("trust_pickle", sa.Boolean(), nullable=False),
        sa.Column("trust_code", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_versions_model_id"),
        sa.UniqueConstraint("model_id", "number", name="uq_versions_model_id_number"),
        sa.UniqueConstraint("model_id", "digest", name="uq_versions_model_id_digest"),
    )
    op.create_table(
        "aliases",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version_number", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "name", name="pk_aliases"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_aliases_model_id"),
        sa.ForeignKeyConstraint(
            ["model_id", "version_number"],
            ["versions.model_id", "versions.number"],
            name="fk_aliases_model_id_version_number",
        ),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", _BIG_ID, autoincrement=True),
        sa.Column("at", _TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(128), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_model_id", "audit_events", ["model", "id"])
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_table(
        "serving_states",
        sa.Column("replica", sa.String(256), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("since", _TIMESTAMP, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", _TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("replica", "model", "version", name="pk_serving_states"),
    )
    catalog_state = op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), autoincrement=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_catalog_state"),
    )
    op.bulk_insert(catalog_state, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    for table in (
        "catalog_state",
        "serving_states",
        "audit_events",
        "aliases",
        "versions",
        "models",
    ):
        op.drop_table(table)
