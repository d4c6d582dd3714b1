"""Fixtures of the reliability suite: a PostgreSQL schema of its own per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import make_url

from tests.registry.conftest import DEFAULT_PG_URL, pg_schema, schema_option


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
