"""A server of the transport suites' models (:func:`tests.model_factory.push_transport_models`)
and Triton clients for it, shared by the suites that drive it with tritonclient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from pitstop.registry import Registry
from tests import model_factory as mf
from tests.server import ServerProcess, open_registry


def transport_server(
    factory: pytest.TempPathFactory, more: Callable[[Registry, Path], None] | None = None
) -> Iterator[ServerProcess]:
    """Serve the transport models (iris batched up to 16, spare, py), and whatever ``more``
    pushes (given the registry and a folder for packages), until the generator is closed."""
    home = factory.mktemp("home")
    src = factory.mktemp("packages")
    with open_registry(home) as registry:
        mf.push_transport_models(registry, src, {"max_batch_size": 16})
        if more is not None:
            more(registry, src)
    with ServerProcess(home) as process:
        yield process


def triton_client(kind: str, server: ServerProcess) -> Any:
    """tritonclient's HTTP (``kind`` "http") or gRPC client for ``server``."""
    if kind == "http":
        return thttp.InferenceServerClient(server.url.removeprefix("http://"))
    return tgrpc.InferenceServerClient(server.grpc_target)
