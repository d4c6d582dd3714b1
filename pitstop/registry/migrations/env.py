"""Alembic environment of the registry.

pitstop runs migrations itself (:func:`pitstop.registry.database.upgrade`), handing over an open
connection that already holds the migration lock; this file only runs them on it. A developer
writing a new migration builds the same ``Config`` in code (see ``database.alembic_config``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from pitstop.registry.schema import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run pitstop's migrations through pitstop.registry.database.upgrade()")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
