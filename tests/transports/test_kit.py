"""kit.guarded, the wrapper every HTTP route answers through: errors as JSON with their status,
the gate asked for the route's action, and ``Connection: close`` on every answer while the
Engine drains."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from pitstop import errors
from pitstop.engine import Engine
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.security.token import ADMIN, READ, Authenticator, TokenFile
from pitstop.settings import Settings
from pitstop.transports.kit import guarded


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(Settings(home=tmp_path))  # never started: guarded reads only its drain state


def app(
    engine: Engine,
    failure: Exception | None,
    action: Action = Action.INFER,
    gate: Gate | None = None,
) -> TestClient:
    async def endpoint(_request: Request) -> Response:
        if failure is not None:
            raise failure
        return JSONResponse({"ok": True})

    if gate is None:
        gate = Gate(Authenticator(TokenFile(engine.settings.home)), open_inference=True)
    route = guarded(endpoint, engine, gate, action)
    return TestClient(Starlette(routes=[Route("/r", route)]))


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (errors.InvalidInput("inputs[0].shape: bad"), 400),
        (errors.PayloadTooLarge("too big"), 413),
        (errors.ModelNotFound("no model 'x'"), 404),
        (errors.Unavailable("loading"), 503),
        (errors.DeadlineExceeded("late"), 504),
        (errors.Unsupported("BF16"), 501),
        (errors.PermissionDenied("needs admin"), 403),
    ],
)
def test_pitstop_errors_answer_json_with_their_status(
    engine: Engine, failure: Exception, status: int
) -> None:
    answer = app(engine, failure).get("/r")
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": str(failure)}


def test_overloaded_says_when_to_retry(engine: Engine) -> None:
    answer = app(engine, errors.Overloaded("queue full", retry_after=2.4)).get("/r")
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "3"  # rounded up


def test_a_scoped_route_checks_the_token_first(engine: Engine, tmp_path: Path) -> None:
    tokens = TokenFile(tmp_path)
    reader = tokens.create("reader", [READ])
    gate = Gate(Authenticator(tokens), open_inference=True)
    client = app(engine, None, Action.ADMIN, gate)
    refused = client.get("/r")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/r", headers={"authorization": f"Bearer {reader}"}).status_code == 403
    admin = tokens.create("admin2", [ADMIN])
    assert client.get("/r", headers={"authorization": f"Bearer {admin}"}).json() == {"ok": True}


@pytest.mark.parametrize("failure", [None, errors.NotFound("gone")])
def test_every_answer_closes_the_connection_while_the_engine_drains(
    engine: Engine, failure: Exception | None
) -> None:
    client = app(engine, failure)
    assert client.get("/r").headers.get("connection") != "close"
    engine.begin_drain()
    assert client.get("/r").headers["connection"] == "close"
