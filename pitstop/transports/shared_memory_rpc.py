"""The shared-memory extensions over gRPC: ``SystemSharedMemoryStatus|Register|Unregister``
and ``CudaSharedMemory*``, as rows of the gRPC route table (``transports/grpc.py``). All are
``infer`` calls, as their HTTP routes are (``transports/shared_memory_api.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pitstop import errors
from pitstop.security.authorization import Action
from pitstop.transports.proto import inference_pb2 as pb
from pitstop.transports.shared_memory import cuda_register
from pitstop.transports.shared_tensors import SharedTensors

GrpcRoute = tuple[Callable[[Any, Any], Awaitable[Any]], Any, Any, Action, str | None]


class SharedMemoryRpc:
    """The extensions' gRPC methods over ``shared``."""

    def __init__(self, shared: SharedTensors) -> None:
        self._shared = shared

    def routes(self) -> dict[str, GrpcRoute]:
        """Rows for the gRPC route table (``transports/grpc.py``)."""
        infer = Action.INFER
        return {
            "SystemSharedMemoryStatus": (
                self.grpc_status, pb.SystemSharedMemoryStatusRequest,
                pb.SystemSharedMemoryStatusResponse, infer, None,
            ),
            "SystemSharedMemoryRegister": (
                self.grpc_register, pb.SystemSharedMemoryRegisterRequest,
                pb.SystemSharedMemoryRegisterResponse, infer, None,
            ),
            "SystemSharedMemoryUnregister": (
                self.grpc_unregister, pb.SystemSharedMemoryUnregisterRequest,
                pb.SystemSharedMemoryUnregisterResponse, infer, None,
            ),
            "CudaSharedMemoryStatus": (
                self.grpc_cuda_status, pb.CudaSharedMemoryStatusRequest,
                pb.CudaSharedMemoryStatusResponse, infer, None,
            ),
            "CudaSharedMemoryRegister": (
                self.grpc_cuda_register, pb.CudaSharedMemoryRegisterRequest,
                pb.CudaSharedMemoryRegisterResponse, infer, None,
            ),
            "CudaSharedMemoryUnregister": (
                self.grpc_cuda_unregister, pb.CudaSharedMemoryUnregisterRequest,
                pb.CudaSharedMemoryUnregisterResponse, infer, None,
            ),
        }  # fmt: skip

    async def grpc_status(
        self, r: pb.SystemSharedMemoryStatusRequest, _c: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for row in self._shared.regions().status(r.name or None):
            entry = response.regions[row.name]
            entry.name, entry.key = row.name, row.key
            entry.offset, entry.byte_size = row.offset, row.byte_size
        return response

    async def grpc_register(
        self, r: pb.SystemSharedMemoryRegisterRequest, _c: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._shared.regions().register(r.name, r.key, r.offset, r.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def grpc_unregister(
        self, r: pb.SystemSharedMemoryUnregisterRequest, _c: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._shared.regions().unregister(r.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def grpc_cuda_status(
        self, r: pb.CudaSharedMemoryStatusRequest, _c: Any
    ) -> pb.CudaSharedMemoryStatusResponse:
        if r.name:
            raise errors.NotFound(f"no CUDA shared memory region {r.name!r} is registered")
        return pb.CudaSharedMemoryStatusResponse()

    async def grpc_cuda_register(
        self, _r: pb.CudaSharedMemoryRegisterRequest, _c: Any
    ) -> pb.CudaSharedMemoryRegisterResponse:
        cuda_register()
        return pb.CudaSharedMemoryRegisterResponse()  # not reached

    async def grpc_cuda_unregister(
        self, _r: pb.CudaSharedMemoryUnregisterRequest, _c: Any
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()
