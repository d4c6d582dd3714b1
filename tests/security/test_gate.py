"""The gate over a real token file and fake clocks: tokens, expiry, certificates, rate limits,
denial counts and logs; the bearer-header parser under fuzzing; and the start-up exposure
decision as a table."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitstop.errors import InvalidInput, Overloaded, PermissionDenied, Unauthenticated
from pitstop.registry.records import TokenRecord
from pitstop.security.authorization import Action
from pitstop.security.exposure import exposure, is_loopback
from pitstop.security.gate import Credentials, Gate
from pitstop.security.rate import RateLimiter
from pitstop.security.token import Authenticator, TokenFile, bearer_secret, digest_of, new_secret

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def registry_token(name: str, scopes: tuple[str, ...], **extra: object) -> tuple[str, TokenRecord]:
    secret, digest = new_secret()
    record = TokenRecord(name, digest, scopes, NOW, "t", **extra)  # type: ignore[arg-type]
    return secret, record


def bearer(secret: str) -> Credentials:
    return Credentials(f"Bearer {secret}")


@pytest.fixture
def world(tmp_path: Path) -> dict[str, object]:
    fraud_secret, fraud = registry_token("fraud-client", ("infer:fraud",), rate_limit=2.0, burst=2)
    old_secret, old = registry_token("old", ("read",), expires_at=NOW - timedelta(seconds=1))
    soon_secret, soon = registry_token("soon", ("read",), expires_at=NOW + timedelta(hours=1))
    other_secret, other = registry_token("other", ("infer",))
    tokens = (fraud, old, soon, other)
    denied: list[tuple[str, str]] = []
    clock = Clock()
    gate = Gate(
        Authenticator(TokenFile(tmp_path), shared=lambda: tokens, clock=lambda: NOW),
        open_inference=False,
        certificate_scopes={"billing": ["infer:fraud"]},
        on_denied=lambda action, reason: denied.append((action.value, reason)),
        clock=clock,
    )
    return {
        "gate": gate, "denied": denied, "clock": clock, "fraud": fraud_secret,
        "old": old_secret, "soon": soon_secret, "other": other_secret,
    }  # fmt: skip


def test_tokens_certificates_and_anonymous(world: dict[str, object]) -> None:
    gate, denied = world["gate"], world["denied"]
    assert isinstance(gate, Gate)
    assert isinstance(denied, list)
    who = gate.admit(bearer(str(world["fraud"])), Action.INFER, "fraud")
    assert who.name == "token:fraud-client"
    with pytest.raises(PermissionDenied, match="token:fraud-client may not infer on model"):
        gate.admit(bearer(str(world["fraud"])), Action.INFER, "churn")
    with pytest.raises(Unauthenticated, match="unknown token"):
        gate.admit(bearer("pst_nope"), Action.INFER, "fraud")
    with pytest.raises(Unauthenticated, match="expired"):
        gate.admit(bearer(str(world["old"])), Action.READ, None)
    assert gate.admit(bearer(str(world["soon"])), Action.READ, None).name == "token:soon"
    with pytest.raises(Unauthenticated, match="needs 'Authorization"):
        gate.admit(Credentials(), Action.INFER, "fraud")
    assert gate.admit(Credentials(), Action.HEALTH, None).anonymous
    assert gate.admit(Credentials(certificate="billing"), Action.INFER, "fraud").name == (
        "cert:billing"
    )
    with pytest.raises(Unauthenticated):  # an unmapped certificate is anonymous
        gate.admit(Credentials(certificate="stranger"), Action.INFER, "fraud")
    # A token, when sent with a certificate, decides.
    with pytest.raises(PermissionDenied):
        gate.admit(Credentials(f"Bearer {world['soon']}", "billing"), Action.INFER, "fraud")
    assert ("infer", "forbidden") in denied
    assert ("read", "unauthenticated") in denied


def test_an_open_server_ignores_a_bad_bearer_only_on_calls_anyone_may_make(tmp_path: Path) -> None:
    """OpenAI's SDKs always send a key (``api_key="unused"``): on a server whose inference is
    open it is ignored for inference and metadata, never for management."""
    gate = Gate(Authenticator(TokenFile(tmp_path)), open_inference=True)
    for action in (Action.INFER, Action.DESCRIBE, Action.OBSERVE):
        assert gate.admit(bearer("unused"), action, "m").anonymous
    for action in (Action.READ, Action.ADMIN):
        with pytest.raises(Unauthenticated, match="unknown token"):
            gate.admit(bearer("unused"), action, "m")


@pytest.mark.parametrize(
    "content", ["{not json", '{"a": 1}', '[{"name": "x"}]', '[{"name": "x", "sha256": "ab", '
                '"scopes": ["bogus", "infer:a b"]}]', "\udcff"],
)  # fmt: skip
def test_a_broken_legacy_token_file_breaks_no_registry_token(tmp_path: Path, content: str) -> None:
    (tmp_path / "tokens.json").write_text(content, errors="surrogateescape")
    secret, record = registry_token("shared", ("read",))
    gate = Gate(
        Authenticator(TokenFile(tmp_path), shared=lambda: (record,), clock=lambda: NOW),
        open_inference=False,
    )
    assert gate.admit(bearer(secret), Action.READ, None).name == "token:shared"
    with pytest.raises(Unauthenticated, match="unknown token"):
        gate.admit(bearer("pst_other"), Action.READ, None)


def test_rate_limit_per_token_with_retry_after(world: dict[str, object]) -> None:
    gate, clock = world["gate"], world["clock"]
    assert isinstance(gate, Gate)
    assert isinstance(clock, Clock)
    fraud = bearer(str(world["fraud"]))
    gate.admit(fraud, Action.INFER, "fraud")
    gate.admit(fraud, Action.INFER, "fraud")  # the burst of 2
    with pytest.raises(Overloaded) as refused:
        gate.admit(fraud, Action.INFER, "fraud")
    assert refused.value.retry_after == pytest.approx(0.5)
    for _ in range(20):  # another token is unaffected (no limit of its own, none by default)
        gate.admit(bearer(str(world["other"])), Action.INFER, "fraud")
    clock.t += 0.5
    gate.admit(fraud, Action.INFER, "fraud")
    with pytest.raises(Overloaded):
        gate.admit(fraud, Action.INFER, "fraud")
    assert ("infer", "rate_limited") in world["denied"]  # type: ignore[operator]


def test_denials_are_logged_with_the_principal_never_the_token(
    world: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    gate = world["gate"]
    assert isinstance(gate, Gate)
    secret = str(world["fraud"])
    with caplog.at_level(logging.WARNING, logger="pitstop.security.gate"):
        for _ in range(5):
            with pytest.raises(PermissionDenied):
                gate.admit(bearer(secret), Action.ADMIN, "fraud")
        with pytest.raises(Unauthenticated):
            gate.admit(bearer(secret + "x"), Action.ADMIN, "fraud")
    text = caplog.text
    assert "denied token:fraud-client: admin forbidden" in text
    assert text.count("denied token:fraud-client") == 1  # throttled: one line per 10 s
    assert "bearer:unknown" in text
    assert secret not in text
    assert digest_of(secret) not in text


def test_each_worker_enforces_its_share_of_every_rate(tmp_path: Path) -> None:
    """With --workers 4 each worker allows a quarter of the token's own rate and of the
    server's default, so the four together allow the configured rates."""
    own_secret, own = registry_token("own", ("infer",), rate_limit=8.0, burst=8)
    default_secret, default = registry_token("default", ("infer",))
    clock = Clock()
    gate = Gate(
        Authenticator(TokenFile(tmp_path), shared=lambda: (own, default), clock=lambda: NOW),
        open_inference=False, rate_limit=40.0, share=0.25, clock=clock,
    )  # fmt: skip
    for secret, admitted, refill in ((own_secret, 2, 0.5), (default_secret, 10, 0.1)):
        for _ in range(admitted):
            gate.admit(bearer(secret), Action.INFER, "m")
        with pytest.raises(Overloaded) as refused:
            gate.admit(bearer(secret), Action.INFER, "m")
        assert refused.value.retry_after == pytest.approx(refill)


def test_the_rate_limiter_is_bounded() -> None:
    limiter = RateLimiter(max_buckets=3)
    for key in "abcde":
        assert limiter.take(key, 1.0, 1, 0.0) == 0.0
    assert len(limiter) == 3
    assert limiter.take("e", 1.0, 1, 0.0) == pytest.approx(1.0)
    assert limiter.take("e", 0.0, 1, 0.0) == 0.0  # no rate: unlimited


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("Basic abc", "must be 'Bearer"),
        ("Bearer", "must be 'Bearer"),
        ("Bearer    ", "must be 'Bearer"),
        ("Bearer " + "a" * 600, "malformed"),
        ("Bearer tok\x00en", "malformed"),
        ("Bearer tökén", "malformed"),
    ],
)
def test_malformed_bearer_headers(header: str, says: str) -> None:
    with pytest.raises(Unauthenticated, match=says):
        bearer_secret(header)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(st.text(max_size=2000), st.binary(max_size=2000).map(lambda b: b.decode("latin-1")))
)
def test_the_bearer_parser_only_ever_refuses_with_unauthenticated(header: str) -> None:
    try:
        secret = bearer_secret(header)
    except Unauthenticated:
        return
    assert 0 < len(secret) <= 512
    assert secret.isascii()


@pytest.mark.parametrize(
    ("host", "tls", "auth", "insecure", "open_", "warned"),
    [
        ("127.0.0.1", False, "auto", False, True, False),
        ("::1", False, "auto", False, True, False),
        ("localhost", False, "auto", False, True, False),
        ("127.0.0.1", False, "on", False, False, False),
        ("0.0.0.0", False, "auto", False, False, False),  # auth on by itself
        ("0.0.0.0", True, "off", False, True, False),  # TLS, inference open on purpose
        ("10.1.2.3", False, "off", True, True, True),  # told --insecure
        ("myhost", False, "auto", False, False, False),
    ],
)
def test_exposure(
    host: str, tls: bool, auth: str, insecure: bool, open_: bool, warned: bool
) -> None:
    decided = exposure(host, tls=tls, inference_auth=auth, insecure=insecure)  # type: ignore[arg-type]
    assert decided.open_inference is open_
    assert (decided.insecure is not None) is warned


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_an_open_server_reachable_from_elsewhere_without_tls_refuses_to_start(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(InvalidInput, match=r"refusing to start.*--insecure"):
        exposure(host, tls=False, inference_auth="off", insecure=False)
