"""Predictions kept for joining feedback, and the feedback joined to them (issue 20).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("prediction_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(128), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("predicted", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("model", "prediction_id", name="pk_predictions"),
    )
    op.create_index("ix_predictions_predicted_at", "predictions", ["predicted_at"])
    op.create_table(
        "feedback",
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("prediction_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("arm", sa.String(128), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("label", sa.String(128), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("correct", sa.Integer(), nullable=True),
        sa.Column("abs_error", sa.Float(), nullable=True),
        sa.Column("sq_error", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("model", "prediction_id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_model_predicted_at", "feedback", ["model", "predicted_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_model_predicted_at", "feedback")
    op.drop_table("feedback")
    op.drop_index("ix_predictions_predicted_at", "predictions")
    op.drop_table("predictions")
