"""uvicorn's HTTP/1.1 protocol (httptools), with pitstop's edges.

- uvicorn answers bytes that are not HTTP (a bad request line, a malformed header, conflicting
  framing headers) with a ``text/plain`` 400 of its own, without asking the app; every other
  error of this server is ``{"error": "..."}`` JSON, and clients parse it as such. (Its other own
  answer, a 500 when an app fails before starting a response, cannot happen here: the inference
  front and Starlette's error middleware always answer.)
- A request head (request line and headers) longer than ``max_head_bytes`` is refused with 431
  before the app sees it; llhttp itself sets no such bound, and httptools buffers an unfinished
  header without one: a header that never ends is refused once the bytes read in the head pass
  the limit (counting whole reads after the one where the request began, so a connection holds
  at most the limit plus two reads).
- Over TLS, the verified client certificate's subject goes into the ASGI ``tls`` extension
  (``client_cert_name``, and ``client_common_name`` for the security gate).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pitstop.transports.tls import peer_common_name, peer_subject

_MALFORMED: Final = orjson.dumps(
    {"error": "invalid HTTP request: the request line, headers or framing are not HTTP/1.1"}
)

DEFAULT_MAX_HEAD_BYTES: Final = 16 * 1024


class HeadTooLarge(Exception):
    """The request head passed the limit (raised inside the parser's callbacks)."""


class JsonErrorsProtocol(HttpToolsProtocol):
    max_head_bytes = DEFAULT_MAX_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._head_too_large = False
        self._in_head = True
        self._head_read = 0
        self._began_in_read = False
        self._tls: dict[str, Any] | None = None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            certificate = ssl_object.getpeercert()
            self._tls = {
                "server_cert": None,
                "client_cert_chain": [],
                "client_cert_name": peer_subject(certificate),
                "client_cert_error": None,
                "tls_version": None,
                "cipher_suite": None,
                "client_common_name": peer_common_name(certificate),
            }

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        if self._began_in_read:  # part of this read may be the previous request's
            self._began_in_read = False
            return
        self._head_read += len(data)
        if self._head_read > self.max_head_bytes:
            self._head_too_large = True
            self.send_400_response("request head too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_read, self._began_in_read = True, 0, True
        self._head_bytes = 0
        if self._tls is not None:
            extensions: dict[str, Any] = {"tls": self._tls}
            self.scope["extensions"] = extensions

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._head_too_large = True
            raise HeadTooLarge

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._send(
                b"431 Request Header Fields Too Large",
                orjson.dumps(
                    {"error": f"request head (line and headers) over {self.max_head_bytes} bytes"}
                ),
            )
            return
        self._send(b"400 Bad Request", _MALFORMED)

    def _send(self, status: bytes, content: bytes) -> None:
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(content)).encode() + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + content)
        self.transport.close()


def protocol(max_head_bytes: int) -> type[JsonErrorsProtocol]:
    """The protocol class uvicorn should build, with this head limit."""
    return type("PitstopHttpProtocol", (JsonErrorsProtocol,), {"max_head_bytes": max_head_bytes})
