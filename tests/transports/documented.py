"""Two real servers for the OpenAPI and fuzz suites: ``healthy`` serves every kind of model the
document describes (and answers 429, 413, 504 when provoked); ``ailing`` holds a model that never
loads (so readiness is 503) and has metrics off."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx

from pitstop.engine import Engine
from pitstop.security.token import Authenticator, TokenFile
from pitstop.settings import Settings
from pitstop.transports.app import Host
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry, wait_for

MAX_REQUEST_BYTES = 1024 * 1024

SLOW_HANDLER = """\
import time
import numpy as np

class Model:
    def predict(self, inputs):
        time.sleep(0.4)
        return {"y": (inputs["x"] * 2).astype(np.float32)}
"""

EMBED_HANDLER = """\
import time
import numpy as np

class Model:
    \"\"\"An 'embedding' per text: its length, its vowels, 1. Slow for 'slow'.\"\"\"

    def predict(self, inputs):
        texts = [t.decode() for t in inputs["text"].reshape(-1)]
        if "slow" in texts:
            time.sleep(0.4)
        rows = [[len(t), sum(c in "aeiou" for c in t), 1.0] for t in texts]
        return {"embedding": np.array(rows, dtype=np.float32)}
"""


def _embedder(folder: Path) -> Path:
    mf.make_python_package(folder, source=EMBED_HANDLER)
    return mf.write_manifest(
        folder,
        {
            "runtime": "python",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 3]}],
            "parameters": {"handler": "handler:Model"},
        },
    )


def push_documented_models(home: Path, src: Path) -> None:
    """iris (ONNX, two versions, production → 1), text (BYTES identity), slow (0.4 s per call),
    embed (an OpenAI-embeddable model), into the embedded registry of ``home``."""
    with open_registry(home) as registry:
        iris = mf.make_onnx_package(src / "iris")
        registry.push(iris, name="iris", aliases=["production"], actor="test")
        registry.push(mf.make_onnx_package(src / "iris2"), name="iris", actor="test")
        text = mf.make_identity_package(src / "text", {"t": "BYTES"})
        registry.push(text, name="text", aliases=["production"], actor="test", trust_code=True)
        slow = mf.make_python_package(src / "slow", source=SLOW_HANDLER)
        registry.push(slow, name="slow", aliases=["production"], actor="test", trust_code=True)
        embed = _embedder(src / "embed")
        registry.push(embed, name="embed", aliases=["production"], actor="test", trust_code=True)


DOCUMENTED_ENV: Final = {
    "PITSTOP_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    "PITSTOP_INFERENCE_THREADS": "1",
    "PITSTOP_MAX_QUEUE_SIZE": "2",
    "PITSTOP_WARMUP_RUNS": "0",
    "PITSTOP_COST_PER_HOUR": "1.5",
    "PITSTOP_DEFAULT_MODEL": "iris",
}


@contextmanager
def healthy_server(root: Path) -> Iterator[ServerProcess]:
    """The documented models (:func:`push_documented_models`): one thread, a queue of 2 for
    slow; requests up to 1 MiB."""
    home, src = root / "home", root / "src"
    push_documented_models(home, src)
    with ServerProcess(home, DOCUMENTED_ENV) as server:
        yield server


@contextmanager
def ailing_server(root: Path) -> Iterator[ServerProcess]:
    """iris, and 'broken': a handler pushed without --trust-code, which never loads. Metrics
    off."""
    home, src = root / "home", root / "src"
    with open_registry(home) as registry:
        registry.push(mf.make_onnx_package(src / "iris"), name="iris", aliases=["production"],
                      actor="test")  # fmt: skip
        broken = mf.make_python_package(src / "broken")
        registry.push(broken, name="broken", aliases=["production"], actor="test")
    server = ServerProcess(home, {"PITSTOP_METRICS_ENABLED": "false"}).start(wait_ready=False)
    try:
        with open_registry(home) as registry:
            assert wait_for(
                lambda: any(s.state == "FAILED" for s in registry.serving_states("broken")), 30
            )
        assert wait_for(
            lambda: httpx.get(f"{server.url}/v2/models/iris/ready").status_code == 200, 30
        )
        yield server
    finally:
        server.stop()
        shutil.rmtree(src, ignore_errors=True)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def admin_headers(server: ServerProcess) -> dict[str, str]:
    return bearer((server.home / "admin.token").read_text().strip())


def scoped_headers(server: ServerProcess, name: str, scopes: list[str]) -> dict[str, str]:
    """A token named ``name`` with ``scopes`` (created once per server)."""
    tokens = TokenFile(server.home)
    if any(t.name == name for t in tokens.load()):
        tokens.revoke(name)
    headers = bearer(tokens.create(name, scopes))
    # The server reads tokens within its watch interval: use this one once it is known. The
    # probe is a management call, refused to other scopes before any rate is charged.
    probe = f"{server.url}/v2/repository/models/no-such-model/unload"
    assert wait_for(lambda: httpx.post(probe, headers=headers).status_code != 401, 10)
    return headers


def served_routes(home: Path) -> list[tuple[str, str]]:
    """Every (path, method) the HTTP app serves, from the Host itself (HEAD left out: Starlette
    answers it for every GET)."""
    settings = Settings(home=home)

    async def routes() -> list[tuple[str, str]]:
        async with Engine(settings) as engine:
            host = Host(engine, settings, Authenticator(TokenFile(home)))
            host.codecs.close()
            return [
                (route.path, method)
                for route in host.routes
                for method in (getattr(route, "methods", None) or ())
                if method != "HEAD"
            ]

    return sorted(asyncio.run(routes()))
