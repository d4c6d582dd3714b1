"""Schemathesis against a real server with pitstop's own /openapi.json: schema-valid and
schema-violating requests to every operation (with an admin token, to reach past the auth
check) must never get a 5xx, and every answer must be one the document describes (status,
content type, body schema). Bounded: PITSTOP_FUZZ_EXAMPLES per operation (default 25), about
30 s in all; the long campaign in docs/benchmarks.md raises it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pitstop.transports.openapi import document
from tests.server import ServerProcess
from tests.transports.documented import admin_headers, healthy_server

EXAMPLES = int(os.environ.get("PITSTOP_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("PITSTOP_FUZZ_SEED", "20261128"))

schema = schemathesis.openapi.from_dict(document("fuzz"))
schema.config.generation.update(max_examples=EXAMPLES, deterministic=True, database="none")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with healthy_server(tmp_path_factory.mktemp("fuzzed")) as process:
        yield process


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SEED == 20261128,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    case: schemathesis.Case, server: ServerProcess
) -> None:
    response = case.call_and_validate(
        base_url=server.url,
        headers=admin_headers(server),
        timeout=15,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
    assert response.status_code < 500


def test_the_server_survived(server: ServerProcess) -> None:
    assert server.process is not None
    assert server.process.poll() is None, server.logs()[-2000:]
