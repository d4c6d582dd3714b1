"""The gRPC listener: a grpc.aio server for one :class:`~pitstop.transports.grpc.GrpcApi`,
over TLS when the server has certificates.

TLS uses ``grpc.dynamic_ssl_server_credentials``: gRPC's core asks for the certificate material
on every new handshake, and gets :class:`~pitstop.transports.tls.TlsFiles`' current material
once its generation moves, so a rotated certificate (or client CA) is served from the next
connection on without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import grpc.aio

from pitstop.transports.grpc import GrpcApi
from pitstop.transports.tls import Material, TlsFiles


def _configuration(material: Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key, material.certificate)], root_certificates=material.client_ca
    )


def _credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Credentials that ask ``tls`` for its material on every handshake: a reloaded
    certificate (or client CA) is used from the next connection on."""
    served = [tls.generation]

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC's core on each new handshake; None keeps the current configuration.
        if tls.generation == served[0]:
            return None
        served[0] = tls.generation
        return _configuration(tls.material)

    return grpc.dynamic_ssl_server_credentials(
        _configuration(tls.material),
        fetch,  # type: ignore[arg-type]  # grpc's stubs miss that None means "no change"
        require_client_authentication=tls.mutual,
    )


class GrpcServer:
    """A grpc.aio server for one :class:`GrpcApi`; create, start and stop it on one event loop."""

    def __init__(
        self,
        api: GrpcApi,
        max_message_bytes: int,
        share_port: bool = False,
        max_metadata_bytes: int = 16 * 1024,
    ) -> None:
        """``share_port``: the workers of one server listen on one port (SO_REUSEPORT; the
        kernel spreads connections over them). Metadata above ``max_metadata_bytes`` ends the
        call with RESOURCE_EXHAUSTED before any handler runs."""
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                # The soft limit alone refuses only some calls above it: both, to be exact.
                ("grpc.max_metadata_size", max_metadata_bytes),
                ("grpc.absolute_max_metadata_size", max_metadata_bytes),
                # gRPC sets SO_REUSEPORT by default, which lets two servers bind one port
                # silently; a port in use must be an error, unless sharing it is the point.
                ("grpc.so_reuseport", int(share_port)),
            ]
        )
        self._server.add_generic_rpc_handlers((api.handler(), api.feedback_handler()))

    async def start(self, host: str, port: int, tls: TlsFiles | None = None) -> int:
        """Listen on ``host:port`` (0 picks a free port), over TLS when ``tls`` is given;
        returns the port bound."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls is None:
                bound = self._server.add_insecure_port(address)
            else:
                bound = self._server.add_secure_port(address, _credentials(tls))
        except RuntimeError as exc:
            raise OSError(f"gRPC cannot listen on {address}: {exc}") from exc
        if bound == 0:
            raise OSError(f"gRPC cannot listen on {address}")
        await self._server.start()
        return bound

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls; give calls in flight ``grace_s`` seconds, then cancel them."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.stop(grace_s)
