"""Management over HTTP: tokens, the repository extension and the statistics extension."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pitstop.security.token import TokenFile
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry

X = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1] * 8}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    src = tmp_path_factory.mktemp("packages")
    with open_registry(home) as registry:
        for name in ("alpha", "beta"):
            folder = mf.make_python_package(src / name)
            registry.push(folder, name=name, aliases=["production"], actor="t", trust_code=True)
    with ServerProcess(home) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> dict[str, str]:
    token = (server.home / "admin.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def reader(server: ServerProcess) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenFile(server.home).create('ro', ['read'])}"}


def test_first_start_creates_a_private_admin_token(server: ServerProcess) -> None:
    token_file = server.home / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    secret = token_file.read_text().strip()
    with open_registry(server.home) as registry:
        [admin] = [t for t in registry.tokens.all() if t.name == "admin"]
    assert admin.scopes == ("admin", "read")
    assert admin.sha256 == hashlib.sha256(secret.encode()).hexdigest()
    stored = b"".join(p.read_bytes() for p in server.home.glob("registry.db*"))  # with the WAL
    assert admin.sha256.encode() in stored
    assert secret.encode() not in stored  # digests only
    assert str(token_file) in server.logs()


@pytest.mark.parametrize("action", ["load", "unload"])
def test_management_calls_need_an_admin_token(
    server: ServerProcess, reader: dict[str, str], action: str
) -> None:
    url = f"{server.url}/v2/repository/models/alpha/{action}"
    missing = httpx.post(url)
    assert missing.status_code == 401
    assert "Bearer" in missing.json()["error"]
    assert httpx.post(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Basic abc"}).status_code == 401
    forbidden = httpx.post(url, headers=reader)
    assert forbidden.status_code == 403
    assert "admin" in forbidden.json()["error"]


def test_unload_and_load_through_the_repository_api(
    server: ServerProcess, admin: dict[str, str]
) -> None:
    infer = f"{server.url}/v2/models/beta/infer"
    assert httpx.post(infer, json=X).status_code == 200
    response = httpx.post(f"{server.url}/v2/repository/models/beta/unload", headers=admin)
    assert response.status_code == 200, response.text
    unloaded = httpx.post(infer, json=X)
    assert unloaded.status_code == 503
    assert "unloaded" in unloaded.json()["error"]
    index = httpx.post(f"{server.url}/v2/repository/index").json()
    rows = {(r["name"], r["version"]): r for r in index}
    assert rows[("beta", "1")]["state"] == "UNAVAILABLE"
    assert rows[("alpha", "1")]["state"] == "READY"
    ready_only = httpx.post(f"{server.url}/v2/repository/index", json={"ready": True}).json()
    assert {r["name"] for r in ready_only} == {"alpha"}
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503

    loaded = httpx.post(f"{server.url}/v2/repository/models/beta/load", headers=admin)
    assert loaded.status_code == 200, loaded.text
    assert httpx.post(infer, json=X).status_code == 200
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_unknown_model_in_repository_calls_is_404(
    server: ServerProcess, admin: dict[str, str]
) -> None:
    response = httpx.post(f"{server.url}/v2/repository/models/ghost/load", headers=admin)
    assert response.status_code == 404
    assert "ghost" in response.json()["error"]


def test_statistics_count_successes_failures_and_time(server: ServerProcess) -> None:
    before = httpx.get(f"{server.url}/v2/models/alpha/stats").json()["model_stats"]
    base = before[0]["inference_stats"] if before else None
    for _ in range(5):
        assert httpx.post(f"{server.url}/v2/models/alpha/infer", json=X).status_code == 200
    bad = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert httpx.post(f"{server.url}/v2/models/alpha/infer", json=bad).status_code == 400
    stats = httpx.get(f"{server.url}/v2/models/alpha/versions/production/stats").json()
    (row,) = stats["model_stats"]
    assert row["name"] == "alpha"
    assert row["version"] == "1"
    inference = row["inference_stats"]
    success_before = base["success"]["count"] if base else 0
    fail_before = base["fail"]["count"] if base else 0
    assert inference["success"]["count"] == success_before + 5
    assert inference["fail"]["count"] == fail_before + 1
    assert inference["compute_infer"]["ns"] > 0
    assert inference["success"]["ns"] >= inference["compute_infer"]["ns"]
    assert row["inference_count"] >= 10  # batch of 2, five times
    everything = httpx.get(f"{server.url}/v2/models/stats").json()["model_stats"]
    assert {r["name"] for r in everything} >= {"alpha"}
    assert httpx.get(f"{server.url}/v2/models/ghost/stats").status_code == 404


def test_revoked_token_is_refused_without_restart(server: ServerProcess, tmp_path: Path) -> None:
    tokens = TokenFile(server.home)
    secret = tokens.create("temp", ["admin"])
    url = f"{server.url}/v2/repository/models/alpha/load"
    assert httpx.post(url, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    tokens.revoke("temp")
    assert httpx.post(url, headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_an_admin_token_from_the_environment_is_registered_and_rotated(tmp_path: Path) -> None:
    """PITSTOP_ADMIN_TOKEN (a Kubernetes Secret): accepted for admin calls, no admin.token file
    written; a restart with another secret replaces it; a short one stops the server."""
    home = tmp_path / "home"
    first, second = "pst_" + "a" * 40, "pst_" + "b" * 40
    url = "/v2/repository/models/ghost/load"  # admin scope; 404 once authorised
    with ServerProcess(home, env={"PITSTOP_ADMIN_TOKEN": first}) as server:
        bearer = {"Authorization": f"Bearer {first}"}
        assert httpx.post(server.url + url, headers=bearer).status_code == 404
    assert not (home / "admin.token").exists()
    with ServerProcess(home, env={"PITSTOP_ADMIN_TOKEN": second}) as server:
        for secret, status in ((first, 401), (second, 404)):
            bearer = {"Authorization": f"Bearer {secret}"}
            assert httpx.post(server.url + url, headers=bearer).status_code == status
    with open_registry(home) as registry:
        names = [t.name for t in registry.tokens.all()]
        assert names == ["admin-env"]
        assert [e.action for e in registry.history()][:3] == [
            "token.create", "token.revoke", "token.create",
        ]  # fmt: skip
    with pytest.raises(RuntimeError, match="admin_token"):
        ServerProcess(tmp_path / "short", env={"PITSTOP_ADMIN_TOKEN": "short"}).start()
