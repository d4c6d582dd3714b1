"""The shared-memory extensions over HTTP.

    GET  /v2/systemsharedmemory[/region/{name}]/status       status (a JSON list)
    POST /v2/systemsharedmemory/region/{name}/register       {"key", "offset", "byte_size"}
    POST /v2/systemsharedmemory[/region/{name}]/unregister   one region, or all of them
    ...  /v2/cudasharedmemory/...                            the same routes: no GPU here

All are ``infer`` calls (a client's own transfer buffers, as in Triton), answered through
``kit.guarded``. The gRPC methods are ``transports/shared_memory_rpc.py``; requests that refer
to regions are read and answered by ``transports/shared_tensors.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pitstop import errors
from pitstop.engine import Engine
from pitstop.security.authorization import Action
from pitstop.security.gate import Gate
from pitstop.transports.body import read_json_object
from pitstop.transports.kit import guarded
from pitstop.transports.shared_memory import cuda_register
from pitstop.transports.shared_tensors import SharedTensors

MAX_BODY = 64 * 1024
SYSTEM = "/v2/systemsharedmemory"
CUDA = "/v2/cudasharedmemory"


class SharedMemoryApi:
    """The extensions' HTTP routes over ``shared``."""

    def __init__(self, engine: Engine, gate: Gate, shared: SharedTensors) -> None:
        self._engine = engine
        self._gate = gate
        self._shared = shared

    def routes(self) -> list[Route]:
        region = SYSTEM + "/region/{name}"
        cuda = CUDA + "/region/{name}"
        return [
            Route(SYSTEM + "/status", self._guard(self.status), methods=["GET"]),
            Route(region + "/status", self._guard(self.status), methods=["GET"]),
            Route(region + "/register", self._guard(self.register), methods=["POST"]),
            Route(SYSTEM + "/unregister", self._guard(self.unregister), methods=["POST"]),
            Route(region + "/unregister", self._guard(self.unregister), methods=["POST"]),
            Route(CUDA + "/status", self._guard(self.cuda_status), methods=["GET"]),
            Route(cuda + "/status", self._guard(self.cuda_status), methods=["GET"]),
            Route(cuda + "/register", self._guard(self.cuda_register), methods=["POST"]),
            Route(CUDA + "/unregister", self._guard(self.cuda_unregister), methods=["POST"]),
            Route(cuda + "/unregister", self._guard(self.cuda_unregister), methods=["POST"]),
        ]

    def _guard(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
        return guarded(endpoint, self._engine, self._gate, Action.INFER)

    async def status(self, request: Request) -> Response:
        rows = self._shared.regions().status(request.path_params.get("name"))
        return JSONResponse([row.to_json() for row in rows])

    async def register(self, request: Request) -> Response:
        body = await read_json_object(request, MAX_BODY)
        unknown = sorted(set(body) - {"key", "offset", "byte_size"})
        if unknown:
            raise errors.InvalidInput(f"{unknown[0]!r}: not a field of a register request")
        if "key" not in body or "byte_size" not in body:
            missing = "key" if "key" not in body else "byte_size"
            raise errors.InvalidInput(f"{missing!r} is missing")
        self._shared.regions().register(
            request.path_params["name"], body["key"], body.get("offset", 0), body["byte_size"]
        )
        return JSONResponse({})

    async def unregister(self, request: Request) -> Response:
        await read_json_object(request, MAX_BODY, optional=True)
        self._shared.regions().unregister(request.path_params.get("name"))
        return JSONResponse({})

    async def cuda_status(self, request: Request) -> Response:
        name = request.path_params.get("name")
        if name is not None:
            raise errors.NotFound(f"no CUDA shared memory region {name!r} is registered")
        return JSONResponse([])

    async def cuda_register(self, request: Request) -> Response:
        await read_json_object(request, MAX_BODY, optional=True)
        cuda_register()
        return JSONResponse({})  # not reached

    async def cuda_unregister(self, request: Request) -> Response:
        await read_json_object(request, MAX_BODY, optional=True)
        return JSONResponse({})
