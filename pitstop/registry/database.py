"""The registry database: engines for SQLite and PostgreSQL, transactions, and migrations.

SQLite runs in WAL mode (readers never wait for the writer) with a busy timeout, and a write
transaction starts with ``BEGIN IMMEDIATE`` so that two writers queue up instead of failing
when one of them tries to upgrade a read lock. PostgreSQL needs nothing special.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from pitstop.errors import RegistryUnavailable

BUSY_TIMEOUT_S: Final = 30.0
"""How long a SQLite writer waits for another one before giving up."""

CONNECT_TIMEOUT_S: Final = 5
"""How long connecting to PostgreSQL may take before the registry counts as unreachable."""

MIGRATION_LOCK_KEY: Final = 0x7069_7473_746F_70  # "pitstop": the advisory lock for migrations

_WRITE: Final = "pitstop_write"
MIGRATIONS: Final = Path(__file__).with_name("migrations")


def open_engine(url: str) -> Engine:
    """An engine for ``url``. For a SQLite file, its folder is created if needed.

    An in-memory SQLite (``sqlite://``) shares one connection and suits single-threaded tests
    only.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # Bound how long an unreachable server can hold a caller (libpq waits forever).
        timeout = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT_S}
        )
        return create_engine(parsed, pool_pre_ping=True, connect_args=timeout)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    if in_memory:
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: object) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN, instead of the driver's own guesswork
    # (it would not open a transaction before DDL and cannot do BEGIN IMMEDIATE).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _enable_wal(cursor)
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    # WAL is stored in the file, so only the first opener switches it. Switching needs an
    # exclusive lock, and SQLite does not apply the busy timeout to it: two processes creating
    # the registry at once can see "database is locked" here, so retry briefly.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _begin_sqlite(connection: Connection) -> None:
    write = connection.get_execution_options().get(_WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def transaction(engine: Engine, *, write: bool, consistent: bool = False) -> Iterator[Session]:
    """A session in one short transaction, committed on success and rolled back on error.

    ``write`` takes SQLite's write lock up front. ``consistent`` makes every statement see the
    same snapshot (PostgreSQL's REPEATABLE READ; a SQLite transaction always does). A database
    that cannot be reached (refused, timed out, connection lost) raises
    :class:`~pitstop.errors.RegistryUnavailable` naming it, in one line.
    """
    with reachable(engine), engine.connect() as connection:
        options: dict[str, Any] = {_WRITE: write}
        if consistent and connection.dialect.name == "postgresql":
            options["isolation_level"] = "REPEATABLE READ"
        connection.execution_options(**options)
        with Session(bind=connection) as session, session.begin():
            yield session


@contextmanager
def reachable(engine: Engine) -> Iterator[None]:
    """Turn connection-level database failures into RegistryUnavailable (one line, naming the
    database without its password); anything else passes through."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        code = getattr(exc.orig, "sqlite_errorcode", None)  # an extended code: the low byte
        if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise  # SQLite contention, not an outage: the caller's retry logic handles it
        where = engine.url.render_as_string(hide_password=True)
        detail = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
        raise RegistryUnavailable(f"registry unreachable ({where}): {detail}") from exc


def alembic_config(connection: Connection) -> Config:
    """The Alembic configuration, built in code: pitstop ships no ``alembic.ini``.

    A developer adds a migration with
    ``command.revision(alembic_config(conn), message=..., autogenerate=True)``.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration. Safe when several processes start at once.

    All migrations run in one transaction that first takes a lock (SQLite: the write lock;
    PostgreSQL: an advisory lock), so a concurrent starter waits and then finds nothing to do.
    """
    with reachable(engine), engine.connect() as connection:
        connection.execution_options(**{_WRITE: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            command.upgrade(alembic_config(connection), "head")
