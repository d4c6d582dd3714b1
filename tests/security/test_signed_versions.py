"""Signed versions end to end: a real server with ``PITSTOP_REQUIRE_SIGNATURE=1`` on the embedded
SQLite registry, driven by the ``pitstop`` command line. An unsigned version and one signed by an
untrusted key are FAILED with the reason while the previous version keeps serving; signing the
version with a trusted key serves it; the history says who signed and what the server trusts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import model_factory as mf
from tests.cli import Completed, run_cli
from tests.server import ServerProcess, open_registry, wait_for

pytestmark = pytest.mark.timeout(240)

ROW = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                   "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip


def run(home: Path, *args: str, ok: bool = True) -> Completed:
    """The CLI in process (tests/cli.py): 14 commands here cost 20 s as subprocesses."""
    result = run_cli({"PITSTOP_HOME": str(home), "PITSTOP_ACTOR": "alice"}, *args)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def package(folder: Path, note: str) -> Path:
    """The iris ONNX package; ``note`` makes its digest its own."""
    mf.make_onnx_package(folder)
    (folder / "NOTES.txt").write_text(note)
    return folder


def state_of(home: Path, version: int) -> tuple[str, str | None] | None:
    with open_registry(home) as registry:
        found = [s for s in registry.serving_states("fraud") if s.version == version]
    return (found[0].state, found[0].error) if found else None


def served_version(url: str) -> str:
    response = httpx.post(f"{url}/v2/models/fraud/infer", json=ROW, timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["pitstop-model-version"]


def test_only_versions_signed_by_a_trusted_key_are_served(tmp_path: Path) -> None:
    home, keys, elsewhere = tmp_path / "home", tmp_path / "keys", tmp_path / "elsewhere"
    release = run(home, "key", "create", "release", "--out", str(keys)).stdout.strip()
    rogue = run(home, "key", "create", "rogue", "--out", str(elsewhere)).stdout.strip()
    assert (keys / "release.key").stat().st_mode & 0o777 == 0o600
    assert run(home, "key", "id", str(keys / "release.pub")).stdout.strip() == release
    again = run(home, "key", "create", "release", "--out", str(keys), ok=False)
    assert again.returncode == 1
    assert "already exists" in again.stderr

    pushed = json.loads(run(
        home, "models", "push", str(package(tmp_path / "p1", "one")), "--name", "fraud",
        "--alias", "production", "--sign", str(keys / "release.key"), "--json",
    ).stdout)  # fmt: skip
    assert (pushed["number"], pushed["signed_by"]) == (1, [release])

    env = {
        "PITSTOP_REQUIRE_SIGNATURE": "1",
        "PITSTOP_TRUSTED_KEYS": json.dumps([str(keys)]),
        "PITSTOP_LOAD_RETRY_BACKOFF_S": "0.1",
    }
    with ServerProcess(home, env) as server:
        assert served_version(server.url) == "1"

        # v2, unsigned, made production: FAILED with the reason; v1 keeps serving.
        run(home, "models", "push", str(package(tmp_path / "p2", "two")), "--name", "fraud")
        run(home, "alias", "set", "fraud", "production", "2")
        assert wait_for(lambda: (state_of(home, 2) or ("",))[0] == "FAILED", timeout=30)
        assert state_of(home, 2) == (
            "FAILED",
            "fraud v2 is not signed by a trusted key (PITSTOP_REQUIRE_SIGNATURE): unsigned",
        )
        status: list[dict[str, Any]] = json.loads(run(home, "status", "fraud", "--json").stdout)
        [row] = [r for r in status if r["alias"] == "production"]
        assert (row["target"], row["serving"], row["state"]) == (2, 1, "FAILED")
        assert row["error"].endswith(": unsigned")
        assert served_version(server.url) == "1"
        assert httpx.get(f"{server.url}/v2/models/fraud/versions/2/ready").status_code != 200

        # v3, signed by a key the server does not trust: FAILED naming the key; still v1.
        run(home, "models", "push", str(package(tmp_path / "p3", "three")), "--name", "fraud",
            "--alias", "production", "--sign", str(elsewhere / "rogue.key"))  # fmt: skip
        assert wait_for(lambda: (state_of(home, 3) or ("",))[0] == "FAILED", timeout=30)
        error = (state_of(home, 3) or ("", ""))[1] or ""
        assert error.endswith(f"signed only by untrusted keys {rogue}"), error
        assert served_version(server.url) == "1"

        # Signing v3 with the trusted key is a registry change: the server retries it.
        signed = run(home, "sign", "fraud", "3", "--key", str(keys / "release.key")).stdout
        assert release in signed
        assert wait_for(lambda: served_version(server.url) == "3", timeout=30)
        assert (state_of(home, 3) or ("",))[0] == "READY"
        assert "loading only versions signed by a trusted key: " + release in server.logs()

    listed = json.loads(run(home, "signatures", "fraud", "--json").stdout)
    assert [(s["version"], s["key_id"], s["signed_by"], s["verifies"]) for s in listed] == sorted(
        [(1, release, "alice", True), (3, release, "alice", True), (3, rogue, "alice", True)]
    )
    events = json.loads(run(home, "history", "--json", "--limit", "100").stdout)
    signs = [(e["version"], e["after"]["key_id"], e["actor"])
             for e in events if e["action"] == "version.sign"]  # fmt: skip
    assert sorted(signs) == sorted([(1, release, "alice"), (3, rogue, "alice"),
                                    (3, release, "alice")])  # fmt: skip
    [trust] = [e for e in events if e["action"] == "trust.policy"]
    assert trust["actor"].startswith("server:")
    assert trust["after"] == {"keys": [release]}
    table = run(home, "history").stdout
    assert f"v3 signed by {release} (ed25519)" in table
    assert f"trusted keys: {release}" in table


def test_a_server_refuses_to_start_on_a_bad_trust_policy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "rsa.pub").write_text(
        "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
    )
    cases = [
        ({"PITSTOP_REQUIRE_SIGNATURE": "1"}, "PITSTOP_TRUSTED_KEYS is empty"),
        ({"PITSTOP_REQUIRE_SIGNATURE": "1",
          "PITSTOP_TRUSTED_KEYS": json.dumps([str(tmp_path / "rsa.pub")])},
         "rsa.pub: not a PEM public key"),
    ]  # fmt: skip
    for env, expected in cases:
        result = subprocess.run(
            [sys.executable, "-m", "pitstop", "serve", "--http-port", "0", "--grpc-port", "0"],
            env={**os.environ, "PITSTOP_HOME": str(home), **env},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.lower().startswith("error: pitstop_"), result.stderr
        assert expected in last
