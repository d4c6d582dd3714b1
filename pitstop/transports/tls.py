"""TLS for both listeners, from PEM files that are re-read when they change.

:class:`TlsFiles` holds the server certificate chain, its key and (for mutual TLS) the CAs whose
client certificates are accepted. HTTP serves through one :class:`ssl.SSLContext` that
:meth:`TlsFiles.refresh` reloads in place: OpenSSL gives every new handshake the context's
current certificate, so a rotated certificate is served without a restart and connections
already open keep theirs. gRPC asks for the material on every handshake
(``grpc.dynamic_ssl_server_credentials``, in ``grpc.py``) and gets the new one once
:attr:`TlsFiles.generation` moves. A half-written or mismatched file is refused (logged once)
and the previous material keeps serving until the files are consistent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pitstop.errors import InvalidInput

log = logging.getLogger(__name__)

POLL_S: Final = 1.0
"""How often the files are checked for changes."""

MAX_PEM_BYTES: Final = 1024 * 1024
"""Largest certificate, key or CA file read."""


@dataclass(frozen=True)
class Material:
    """The PEM bytes of one consistent reading of the files."""

    certificate: bytes
    key: bytes
    client_ca: bytes | None


class TlsFiles:
    """The server's TLS files; build it at start (it reads and checks them), call
    :meth:`refresh` (blocking file reads) or run :meth:`watch` to follow changes."""

    def __init__(self, certificate: Path, key: Path, client_ca: Path | None = None) -> None:
        self.certificate, self.key, self.client_ca = certificate, key, client_ca
        self.generation = 0
        """Moves each time new material is loaded."""
        self._seen: tuple[tuple[int, int, int], ...] = ()
        self._refused: tuple[tuple[int, int, int], ...] = ()
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._seen = self._signature()
        self.material = self._read()
        self._load(self.context, self.material)

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def _paths(self) -> tuple[Path, ...]:
        paths = (self.certificate, self.key)
        return paths if self.client_ca is None else (*paths, self.client_ca)

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        signature = []
        for path in self._paths():
            try:
                info = os.stat(path)
            except OSError:
                signature.append((0, 0, -1))
                continue
            signature.append((info.st_ino, info.st_mtime_ns, info.st_size))
        return tuple(signature)

    def _read(self) -> Material:
        def read(path: Path) -> bytes:
            try:
                with open(path, "rb") as handle:
                    data = handle.read(MAX_PEM_BYTES + 1)
            except OSError as exc:
                raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
            if len(data) > MAX_PEM_BYTES:
                raise InvalidInput(f"{path} is larger than {MAX_PEM_BYTES} bytes")
            return data

        ca = read(self.client_ca) if self.client_ca is not None else None
        return Material(read(self.certificate), read(self.key), ca)

    def _load(self, context: ssl.SSLContext, material: Material) -> None:
        """Load ``material`` (one reading of the files, so the pair cannot change between
        the check and the use) into ``context``; InvalidInput naming the files."""
        try:
            with _in_memory(material.certificate) as cert, _in_memory(material.key) as key:
                context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidInput(
                f"TLS certificate {self.certificate} / key {self.key}: {_reason(exc)}"
            ) from None
        if material.client_ca is not None:
            try:
                with _in_memory(material.client_ca) as ca:
                    context.load_verify_locations(cafile=ca)
            except (ssl.SSLError, OSError) as exc:
                raise InvalidInput(f"TLS client CA {self.client_ca}: {_reason(exc)}") from None

    def refresh(self) -> bool:
        """Reload when the files changed and are consistent; True when new material serves.
        Reads the files (a few kilobytes): call it from the thread that serves."""
        signature = self._signature()
        if signature == self._seen or signature == self._refused:
            return False
        try:
            material = self._read()
            trial = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._load(trial, material)  # all or nothing: the live context gets a checked pair
            self._load(self.context, material)
        except InvalidInput as error:
            self._refused = signature
            log.warning("TLS files changed but cannot be used (still serving the old): %s", error)
            return False
        self.material = material
        self._seen = signature
        self.generation += 1
        log.info("TLS certificate reloaded from %s", self.certificate)
        return True

    async def watch(self, interval_s: float = POLL_S) -> None:
        """Follow the files until cancelled. The check runs on the event loop: a few ``stat``
        calls, and on a change reading files of a few kilobytes — and the live context must
        not change while the loop's thread starts a handshake from it."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.refresh()
            except Exception:
                log.exception("checking the TLS files failed")


@contextlib.contextmanager
def _in_memory(data: bytes) -> Iterator[str]:
    """A path whose content is ``data``, for OpenSSL's file-only loaders: an anonymous
    in-memory file on Linux (the key never touches a disk), else a private temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("pitstop-tls", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as handle:
                handle.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as folder:  # mode 0700
        path = os.path.join(folder, "pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
            handle.write(data)
        yield path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def peer_common_name(certificate: dict[str, object] | None) -> str | None:
    """The subject common name of a verified peer certificate (``SSLSocket.getpeercert()``)."""
    if not certificate:
        return None
    subject = certificate.get("subject")
    if not isinstance(subject, tuple):
        return None
    for rdn in subject:
        for attribute in rdn if isinstance(rdn, tuple) else ():
            pair = attribute if isinstance(attribute, tuple) and len(attribute) == 2 else None
            if pair is not None and pair[0] == "commonName":
                return str(pair[1])
    return None


def peer_subject(certificate: dict[str, object] | None) -> str | None:
    """The subject as ``CN=..,O=..`` (most specific first), for the ASGI ``tls`` extension."""
    if not certificate:
        return None
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST"}  # fmt: skip
    parts = []
    subject = certificate.get("subject")
    for rdn in subject if isinstance(subject, tuple) else ():
        for attribute in rdn if isinstance(rdn, tuple) else ():
            if isinstance(attribute, tuple) and len(attribute) == 2:
                parts.append(f"{short.get(str(attribute[0]), attribute[0])}={attribute[1]}")
    return ",".join(reversed(parts)) or None
