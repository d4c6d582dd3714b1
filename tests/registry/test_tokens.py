"""Bearer tokens in the registry: digests only, a catalog change each (generation, audit), and
part of the snapshot servers read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.errors import Conflict, InvalidInput, NotFound
from pitstop.registry import Registry
from pitstop.security.token import new_secret


def test_tokens_are_stored_as_digests_and_audited(db_url: str, tmp_path: Path) -> None:
    with Registry.open(db_url, tmp_path / "a") as registry:
        secret, digest = new_secret()
        before = registry.generation()
        registry.tokens.create("ci", digest, ["read"], actor="alice")
        assert registry.generation() == before + 1  # servers re-read: a revocation spreads
        [stored] = registry.tokens.all()
        assert (stored.name, stored.sha256, stored.scopes) == ("ci", digest, ("read",))
        assert secret not in repr(stored)
        assert registry.snapshot().tokens == (stored,)
        with pytest.raises(Conflict, match="already exists"):
            registry.tokens.create("ci", new_secret()[1], ["admin"], actor="alice")
        with pytest.raises(InvalidInput, match="digest"):
            registry.tokens.create("raw", secret, ["read"], actor="alice")
        registry.tokens.revoke("ci", actor="bob")
        assert registry.snapshot().tokens == ()
        with pytest.raises(NotFound):
            registry.tokens.revoke("ci", actor="bob")
        actions = [(e.action, e.actor) for e in registry.history(None, limit=10)]
        assert ("token.create", "alice") in actions
        assert ("token.revoke", "bob") in actions


def test_expiry_and_rate_limits_are_stored_checked_and_audited(db_url: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    with Registry.open(db_url, tmp_path / "a") as registry:
        expires = datetime.now(UTC) + timedelta(days=30)
        registry.tokens.create(
            "fraud", new_secret()[1], ["infer:fraud"], actor="alice", expires_at=expires,
            rate_limit=50.0, burst=100,
        )  # fmt: skip
        [stored] = registry.snapshot().tokens
        assert stored.expires_at == expires
        assert (stored.rate_limit, stored.burst) == (50.0, 100)
        [event] = [e for e in registry.history(None) if e.action == "token.create"]
        assert event.after is not None
        assert event.after["rate_limit"] == 50.0
        assert event.after["expires_at"].startswith(str(expires.date()))
        with pytest.raises(InvalidInput, match="future"):
            registry.tokens.create(
                "old", new_secret()[1], ["read"], actor="a",
                expires_at=datetime.now(UTC) - timedelta(seconds=1),
            )  # fmt: skip
        with pytest.raises(InvalidInput, match="rate"):
            registry.tokens.create("r", new_secret()[1], ["read"], actor="a", rate_limit=0)
