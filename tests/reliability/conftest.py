"""Fixtures of the reliability suite: a PostgreSQL schema of its own per test, and one real
S3-compatible server (SeaweedFS) with a ``models`` bucket for the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import make_url

from tests.registry.conftest import DEFAULT_PG_URL, pg_schema, schema_option
from tests.s3_server import S3Server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("weed")).start()
    server.client().create_bucket(Bucket="models")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def schema() -> Iterator[tuple[str, int]]:
    """(URL options selecting a fresh schema, PostgreSQL's port)."""
    base = os.environ.get("PITSTOP_TEST_PG_URL", DEFAULT_PG_URL)
    with pg_schema() as name:
        yield schema_option(name), make_url(base).port or 5432


def url_through(port: int, options: str) -> str:
    """The test PostgreSQL's URL with another port (a proxy's) and ``options``."""
    base = make_url(os.environ.get("PITSTOP_TEST_PG_URL", DEFAULT_PG_URL)).set(port=port)
    return f"{base.render_as_string(hide_password=False)}?{options}"
