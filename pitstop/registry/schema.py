"""The registry's tables (SQLAlchemy 2 declarative). Private to :mod:`pitstop.registry`.

Portable across SQLite and PostgreSQL: JSON columns are ``sqlalchemy.JSON`` and timestamps are
UTC. The migrations in ``migrations/versions`` create exactly these tables; a test compares the
two. Rows of ``audit_events`` are only ever inserted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_LENGTH: Final = 128
ACTOR_LENGTH: Final = 256
DIGEST_LENGTH: Final = 71  # "sha256:" + 64 hex digits
ID_LENGTH: Final = 128
"""Longest prediction id (a request's own id, or a generated UUID) and feedback label."""

# SQLite only auto-increments an INTEGER PRIMARY KEY, so the 64-bit id is INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back tz-aware in UTC.

    SQLite keeps no time zone, so values are stored there as naive UTC and tagged on the way out.
    Naive datetimes are refused on the way in: their zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; pass a tz-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {dict[str, Any]: JSON(), datetime: UTCDateTime()}


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("model_id", "number"),
        UniqueConstraint("model_id", "digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    number: Mapped[int]
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    runtime: Mapped[str] = mapped_column(String(NAME_LENGTH))
    manifest: Mapped[dict[str, Any]]
    files: Mapped[list[list[Any]]] = mapped_column(JSON())
    """``[[path, sha256, size], ...]`` sorted by path."""
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any]]
    trust_pickle: Mapped[bool] = mapped_column(Boolean)
    trust_code: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (
        # An alias can only point at a version that exists.
        ForeignKeyConstraint(
            ["model_id", "version_number"], ["versions.model_id", "versions.number"]
        ),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    version_number: Mapped[int]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index(None, "model", "id"), Index(None, "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(NAME_LENGTH))
    alias: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int | None]
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    reason: Mapped[str | None] = mapped_column(Text)


class ServingStateRow(Base):
    __tablename__ = "serving_states"

    replica: Mapped[str] = mapped_column(String(ACTOR_LENGTH), primary_key=True)
    model: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    state: Mapped[str] = mapped_column(String(32))
    since: Mapped[datetime]
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class ReplicaRow(Base):
    """One server's last heartbeat and the catalog generation it has applied (every alias
    target it serves is READY, or FAILED)."""

    __tablename__ = "replicas"

    name: Mapped[str] = mapped_column(String(ACTOR_LENGTH), primary_key=True)
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int]
    software: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    applied_generation: Mapped[int] = mapped_column(BigInteger)


class TokenRow(Base):
    """A bearer token: its name, the sha256 of its secret (never the secret) and its scopes."""

    __tablename__ = "tokens"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    rate_limit: Mapped[float | None] = mapped_column(Float(), default=None)
    burst: Mapped[int | None] = mapped_column(default=None)


class StepWindowRow(Base):
    """What one replica observed of one arm (version) of a running rollout, for its current
    step: a summary the rollout controller merges over the live replicas."""

    __tablename__ = "step_windows"

    rollout_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    replica: Mapped[str] = mapped_column(String(ACTOR_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    step: Mapped[int]
    summary: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class CatalogStateRow(Base):
    """One row whose ``generation`` every catalog change increments in its own transaction.

    Taking this row's lock first also serialises catalog writers, so generations (and audit
    ids) are committed in order and a poller can never miss a change.
    """

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)


class PolicyRow(Base):
    """A model's traffic policy; absent means the default (100% ``production``)."""

    __tablename__ = "traffic_policies"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    policy: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class RolloutRow(Base):
    """A progressive rollout of one version of a model. At most one is active per model."""

    __tablename__ = "rollouts"
    __table_args__ = (Index(None, "model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int]
    baseline: Mapped[int]
    steps: Mapped[list[float]] = mapped_column(JSON())
    interval_s: Mapped[float] = mapped_column(Float())
    guard: Mapped[dict[str, Any]]
    step: Mapped[int]
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    step_started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class LeaseRow(Base):
    """A named lease (e.g. the rollout controller's), held by one replica until it expires."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    holder: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    expires_at: Mapped[datetime]


class ReferenceRow(Base):
    """A version's reference profile for drift monitoring (JSON, opaque to the registry)."""

    __tablename__ = "reference_profiles"
    __table_args__ = (
        ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.number"]),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    profile: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class SignatureRow(Base):
    """A signature of one version's digest by one key. The registry keeps it as given; whoever
    loads the version verifies it (:mod:`pitstop.security.signature`)."""

    __tablename__ = "signatures"
    __table_args__ = (
        ForeignKeyConstraint(["model_id", "version"], ["versions.model_id", "versions.number"]),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    key_id: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(32))
    public_key: Mapped[str] = mapped_column(Text)
    """PEM of the signing key, for people: trust comes from the server's own key files."""
    signature: Mapped[str] = mapped_column(String(512))
    signed_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    signed_at: Mapped[datetime]


class PredictionRow(Base):
    """A recent prediction, kept for joining feedback that arrives later
    (``PITSTOP_PREDICTIONS=registry``); rows older than the retention are pruned."""

    __tablename__ = "predictions"

    model: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int]
    arm: Mapped[str] = mapped_column(String(NAME_LENGTH))
    predicted_at: Mapped[datetime] = mapped_column(index=True)
    predicted: Mapped[dict[str, Any]]
    """``{"rows": [...]}``: one value per answered row (at most 16), a number or a label."""


class FeedbackRow(Base):
    """What happened after a prediction (a label, a value or a reward), joined to the version
    and arm that made it. One row per prediction: later feedback for the same id replaces it."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_model_predicted_at", "model", "predicted_at"),)

    model: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int]
    arm: Mapped[str] = mapped_column(String(NAME_LENGTH))
    predicted_at: Mapped[datetime]
    observed_at: Mapped[datetime]
    """When the outcome happened (the feedback's ``at``, else when it arrived)."""
    received_at: Mapped[datetime]
    label: Mapped[str | None] = mapped_column(String(ID_LENGTH), default=None)
    value: Mapped[float | None] = mapped_column(Float(), default=None)
    reward: Mapped[float | None] = mapped_column(Float(), default=None)
    correct: Mapped[int | None] = mapped_column(default=None)
    """1 when the label equals the prediction, 0 when not (labels only)."""
    abs_error: Mapped[float | None] = mapped_column(Float(), default=None)
    sq_error: Mapped[float | None] = mapped_column(Float(), default=None)
