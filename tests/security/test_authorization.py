"""authorize(), the one access decision, as a table: principal, action, model → allow/deny;
and the scope parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitstop.errors import InvalidInput
from pitstop.security.authorization import (
    ANONYMOUS,
    Action,
    Kind,
    Principal,
    Scope,
    authorize,
    parse_scope,
    parse_scopes,
)

H, D, INF, OBS, R, A = (
    Action.HEALTH, Action.DESCRIBE, Action.INFER, Action.OBSERVE, Action.READ, Action.ADMIN,
)  # fmt: skip


def principal(*scopes: str) -> Principal:
    return Principal("token:t", parse_scopes(scopes))


ADMIN = principal("admin")
READER = principal("read")
INFER_ALL = principal("infer")
FRAUD = principal("infer:fraud")
FRAUD_STAR = principal("infer:fraud-*")
MIXED = principal("infer:fraud", "read")

# (principal, open inference, action, model, allowed, authenticated)
TABLE = [
    # health: anyone, always
    (ANONYMOUS, False, H, None, True, True),
    (FRAUD, False, H, None, True, True),
    # anonymous, inference closed: nothing else, and it is a 401
    (ANONYMOUS, False, D, None, False, False),
    (ANONYMOUS, False, INF, "fraud", False, False),
    (ANONYMOUS, False, OBS, None, False, False),
    # anonymous, inference open (loopback): infer, describe, observe; never management
    (ANONYMOUS, True, INF, "fraud", True, True),
    (ANONYMOUS, True, D, "fraud", True, True),
    (ANONYMOUS, True, OBS, None, True, True),
    (ANONYMOUS, True, R, "fraud", False, False),
    (ANONYMOUS, True, A, "fraud", False, False),
    # admin: everything
    (ADMIN, False, INF, "fraud", True, True),
    (ADMIN, False, R, None, True, True),
    (ADMIN, False, A, "anything", True, True),
    # read: metadata, observation, management reads; no inference, no changes
    (READER, False, D, "fraud", True, True),
    (READER, False, OBS, None, True, True),
    (READER, False, R, "fraud", True, True),
    (READER, False, INF, "fraud", False, True),
    (READER, False, A, "fraud", False, True),
    # infer: every model; describe too; no observation or management
    (INFER_ALL, False, INF, "fraud", True, True),
    (INFER_ALL, False, INF, "churn", True, True),
    (INFER_ALL, False, D, None, True, True),
    (INFER_ALL, False, OBS, None, False, True),
    (INFER_ALL, False, R, "fraud", False, True),
    (INFER_ALL, False, A, "fraud", False, True),
    # infer:fraud: that model only (exact), describe it, server metadata
    (FRAUD, False, INF, "fraud", True, True),
    (FRAUD, False, INF, "fraud-v2", False, True),
    (FRAUD, False, INF, "churn", False, True),
    (FRAUD, False, D, "fraud", True, True),
    (FRAUD, False, D, "churn", False, True),
    (FRAUD, False, D, None, True, True),
    (FRAUD, False, INF, None, False, True),
    # a glob
    (FRAUD_STAR, False, INF, "fraud-eu", True, True),
    (FRAUD_STAR, False, INF, "fraud", False, True),
    (FRAUD_STAR, False, INF, "xfraud-eu", False, True),
    # scopes add up
    (MIXED, False, INF, "fraud", True, True),
    (MIXED, False, INF, "churn", False, True),
    (MIXED, False, D, "churn", True, True),
    (MIXED, False, R, "churn", True, True),
    (MIXED, False, A, "fraud", False, True),
    # open inference changes nothing for a token
    (READER, True, INF, "fraud", False, True),
]


@pytest.mark.parametrize(("who", "open_", "action", "model", "allowed", "authenticated"), TABLE)
def test_authorize(
    who: Principal,
    open_: bool,
    action: Action,
    model: str | None,
    allowed: bool,
    authenticated: bool,
) -> None:
    decision = authorize(who, action, model, open_=open_)
    assert decision.allowed is allowed
    assert decision.authenticated is authenticated
    if not allowed and authenticated:
        assert who.name in decision.reason
        assert action.value in decision.reason


@pytest.mark.parametrize(
    ("text", "scope"),
    [
        ("admin", Scope(Kind.ADMIN)),
        ("read", Scope(Kind.READ)),
        ("infer", Scope(Kind.INFER)),
        ("infer:fraud", Scope(Kind.INFER, "fraud")),
        ("infer:fraud-[ab]?", Scope(Kind.INFER, "fraud-[ab]?")),
    ],
)
def test_scopes_parse(text: str, scope: Scope) -> None:
    assert parse_scope(text) == scope
    assert str(scope) == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "1 to 256"),
        ("x" * 300, "1 to 256"),
        ("write", "admin, read or infer"),
        ("read:fraud", "only infer"),
        ("admin:x", "only infer"),
        ("infer:", "glob"),
        ("infer:fraud/../x", "glob"),
        ("infer:a b", "glob"),
    ],
)
def test_bad_scopes_are_refused_naming_the_problem(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_scope(text)


def test_a_token_needs_a_scope() -> None:
    with pytest.raises(InvalidInput, match="at least one"):
        parse_scopes([])


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_the_scope_parser_only_ever_refuses_with_invalid_input(text: str) -> None:
    try:
        scope = parse_scope(text)
    except InvalidInput:
        return
    assert parse_scope(str(scope)) == scope
    assert isinstance(scope.allows(Action.INFER, text), bool)
