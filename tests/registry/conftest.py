"""Fixtures for the registry: a database per test (SQLite file and PostgreSQL) and tiny packages.

PostgreSQL: ``PITSTOP_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test gets its own schema, dropped afterwards. Without a reachable server the PostgreSQL
variants are skipped, unless ``CI`` is set, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from pitstop.registry import Registry

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

MakePackage = Callable[..., Path]


def _pg_base_url() -> str:
    return os.environ.get("PITSTOP_TEST_PG_URL", DEFAULT_PG_URL)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A registry URL on an empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'registry.db'}"
        return
    base = _pg_base_url()
    separator = "&" if "?" in base else "?"
    with pg_schema() as schema:
        yield f"{base}{separator}{schema_option(schema)}"


def schema_option(schema: str) -> str:
    """The URL query parameter that makes a connection use ``schema``."""
    return f"options={quote(f'-csearch_path={schema}')}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A new empty schema on the test PostgreSQL, dropped afterwards; skipped (failed under
    CI) when the server is unreachable."""
    base = _pg_base_url()
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    schema = f"pitstop_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        message = f"PostgreSQL unreachable at {make_url(base).render_as_string()}: {exc.orig}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + " (set PITSTOP_TEST_PG_URL, or CI to make this fail)")
    try:
        yield schema
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def registry(db_url: str, tmp_path: Path) -> Iterator[Registry]:
    with Registry.open(db_url, tmp_path / "artifacts") as opened:
        yield opened


@pytest.fixture
def make_package(tmp_path: Path) -> MakePackage:
    """``make_package(name, manifest=..., files=...)``: a model folder under ``tmp_path``.

    ``manifest`` (a dict) becomes ``pitstop.yaml``; the default is an ONNX model with one input.
    ``files`` maps relative paths to bytes; the default is a fake ``model.onnx``.
    """

    def make(
        name: str = "pkg",
        manifest: dict[str, object] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Path:
        folder = tmp_path / "packages" / name
        folder.mkdir(parents=True)
        if manifest is None:
            manifest = {
                "runtime": "onnx",
                "artifact": "model.onnx",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            }
        (folder / "pitstop.yaml").write_text(yaml.safe_dump(manifest))
        for relpath, content in (files or {"model.onnx": b"fake onnx " + name.encode()}).items():
            target = folder / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return folder

    return make
