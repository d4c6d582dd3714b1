"""HTTP ``Content-Encoding`` both ways, for every route (tritonclient's
``request_compression_algorithm`` and ``response_compression_algorithm``).

Requests sent with ``Content-Encoding: gzip`` (or ``x-gzip``) or ``deflate`` are inflated as
they arrive, in pieces of at most :data:`PIECE` bytes, so a route reads the decompressed body
through its usual size check: a body that inflates past the limit gets 413 after at most one
piece more than the limit, however small it was on the wire (a zip bomb). The compressed bytes
are bounded by the same limit. ``deflate`` is the zlib format (RFC 9110); a raw deflate stream,
which some clients send instead, is accepted too. A concatenation of gzip members is read whole.
Any other coding gets 415 naming it; a corrupt or truncated stream gets 400.

Responses are compressed when the request's ``Accept-Encoding`` accepts gzip or deflate (its
q-values respected; gzip preferred on a tie), the body is sent whole (not streamed) and at least
``min_bytes`` long, and the result is smaller. Bodies over :data:`INLINE_BYTES` are compressed in
a thread (zlib releases the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pitstop import errors

CODINGS: Final = ("gzip", "deflate")
"""The codings read and written, besides identity."""

PIECE: Final = 256 * 1024
"""Most bytes one inflate step produces (what a route receives as one chunk)."""

INLINE_BYTES: Final = 64 * 1024
"""Responses up to this size are compressed on the event loop; larger ones in a thread."""

LEVEL: Final = 1
"""zlib level for responses: the fastest (tensors compress little better at higher levels)."""

_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_STREAMED: Final = (b"text/event-stream",)


def request_coding(header: str | None) -> str | None:
    """The coding a ``Content-Encoding`` value names: None for identity (or no header),
    ``gzip`` or ``deflate``; UnsupportedMediaType for anything else, stacked codings included."""
    if header is None:
        return None
    coding = header.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding == "x-gzip":
        return "gzip"
    if coding in CODINGS:
        return coding
    raise errors.UnsupportedMediaType(
        f"Content-Encoding {header!r} is not supported; send gzip, deflate or identity"
    )


def response_coding(header: str | None) -> str | None:
    """The coding to answer in for an ``Accept-Encoding`` value: gzip or deflate, whichever has
    the higher q-value (gzip on a tie; ``*`` stands for both), or None when neither is
    acceptable. Malformed parts are ignored, as HTTP says."""
    if not header:
        return None
    weights: dict[str, float] = {}
    for part in header.split(","):
        name, _, params = part.partition(";")
        name = name.strip().lower()
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        if name == "x-gzip":
            name = "gzip"
        if name in CODINGS or name == "*":
            weights[name] = weight if 0.0 <= weight <= 1.0 else 0.0
    wildcard = weights.get("*", 0.0)
    best = max(CODINGS, key=lambda c: weights.get(c, wildcard))
    return best if weights.get(best, wildcard) > 0 else None


class Inflater:
    """One request body, inflated incrementally (``identity`` passes it through): :meth:`feed`
    each chunk as it arrives, then :meth:`finish`. Raises PayloadTooLarge past ``limit``
    inflated bytes and InvalidInput for a corrupt stream, data after its end, or a stream cut
    short."""

    def __init__(self, coding: str, limit: int) -> None:
        self._coding = coding
        self._limit = limit
        self._size = 0
        self._decoder: zlib._Decompress | None = None
        self._head = b""  # deflate: the first bytes, until the format is known
        self._started = False

    def feed(self, data: bytes) -> list[bytes]:
        """The inflated pieces of ``data`` (each at most :data:`PIECE` bytes)."""
        if not data:
            return []
        if self._coding == "identity":
            return [data]
        self._started = True
        if self._decoder is None:
            data = self._head + data
            if self._coding == "deflate" and len(data) < 2:
                self._head = data
                return []
            self._head = b""
            self._decoder = zlib.decompressobj(self._wbits(data))
        pieces: list[bytes] = []
        while data:
            decoder = self._decoder
            if decoder.eof:
                if self._coding != "gzip":
                    raise errors.InvalidInput(self._where("data after the end of the stream"))
                decoder = self._decoder = zlib.decompressobj(_GZIP_WBITS)  # the next member
            try:
                piece = decoder.decompress(data, PIECE)
            except zlib.error as exc:
                raise errors.InvalidInput(
                    self._where(f"not valid {self._coding} data: {exc}")
                ) from exc
            data = decoder.unconsumed_tail or decoder.unused_data
            self._size += len(piece)
            if self._size > self._limit:
                raise errors.PayloadTooLarge(
                    f"request body exceeds the limit of {self._limit} bytes once decompressed "
                    f"(Content-Encoding: {self._coding})"
                )
            if piece:
                pieces.append(piece)
        return pieces

    def finish(self) -> None:
        """Check that the body ended where its stream does (an empty body is fine)."""
        if not self._started:
            return
        if self._decoder is None or not self._decoder.eof:
            raise errors.InvalidInput(self._where("the body ends before its compressed stream"))

    def _wbits(self, data: bytes) -> int:
        if self._coding == "gzip":
            return _GZIP_WBITS
        zlib_header = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS

    def _where(self, problem: str) -> str:
        return f"request body (Content-Encoding: {self._coding}): {problem}"


def compressed(body: bytes, coding: str) -> bytes:
    """``body`` in ``coding`` (gzip or zlib-format deflate) at :data:`LEVEL`."""
    wbits = _GZIP_WBITS if coding == "gzip" else zlib.MAX_WBITS
    encoder = zlib.compressobj(LEVEL, zlib.DEFLATED, wbits)
    return encoder.compress(body) + encoder.flush()


def compression(app: ASGIApp, limit: int, min_bytes: int | None) -> ASGIApp:
    """``app`` reading compressed request bodies (at most ``limit`` bytes, compressed or not)
    and, unless ``min_bytes`` is None, compressing response bodies of at least ``min_bytes``."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        encoding: bytes | None = None
        accept: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                encoding = value
            elif name == b"accept-encoding":
                accept = value
        if encoding is not None:
            scope = dict(scope)
            scope["headers"] = [
                (name, value)
                for name, value in scope["headers"]
                if name not in (b"content-encoding", b"content-length")
            ]
            receive = _Inflating(receive, encoding.decode("latin-1"), limit)
        if accept is not None and min_bytes is not None:
            coding = response_coding(accept.decode("latin-1"))
            if coding is not None:
                send = _compressing(send, coding, min_bytes)
        await app(scope, receive, send)

    return serve


class _Inflating:
    """A ``receive`` that hands the app the inflated body, then passes the original through
    (for the disconnect). Problems are raised from the call, so the route reading the body
    answers them like its own."""

    def __init__(self, receive: Receive, header: str, limit: int) -> None:
        self._receive = receive
        self._header = header
        self._limit = limit
        self._pieces: deque[bytes] = deque()
        self._inflater: Inflater | None = None
        self._received = 0
        self._ended = False
        self._delivered = False

    async def __call__(self) -> Message:
        if self._delivered:
            return await self._receive()
        while True:
            if self._pieces:
                more = len(self._pieces) > 1 or not self._ended
                return {"type": "http.request", "body": self._pieces.popleft(), "more_body": more}
            if self._ended:
                self._delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await self._receive()
            if message["type"] != "http.request":
                return message
            if self._inflater is None:
                coding = request_coding(self._header)
                self._inflater = Inflater(coding or "identity", self._limit)
            body: bytes = message.get("body", b"")
            self._received += len(body)
            if self._received > self._limit:
                raise errors.PayloadTooLarge(
                    f"request body exceeds the limit of {self._limit} bytes (compressed)"
                )
            self._pieces.extend(self._inflater.feed(body))
            if not message.get("more_body", False):
                self._inflater.finish()
                self._ended = True


def _compressing(send: Send, coding: str, min_bytes: int) -> Send:
    held: list[Message] = []

    async def compressing(message: Message) -> None:
        if message["type"] == "http.response.start":
            held.append(message)
            return
        if not held:
            await send(message)
            return
        start = held.pop()
        body: bytes = message.get("body", b"")
        headers: list[tuple[bytes, bytes]] = list(start.get("headers", []))
        if (
            not message.get("more_body", False)
            and len(body) >= min_bytes
            and start["status"] not in (204, 206, 304)
            and not any(
                name == b"content-encoding"
                or (name == b"content-type" and value.startswith(_STREAMED))
                for name, value in headers
            )
        ):
            if len(body) > INLINE_BYTES:
                packed = await asyncio.to_thread(compressed, body, coding)
            else:
                packed = compressed(body, coding)
            if len(packed) < len(body):
                headers = [(n, v) for n, v in headers if n != b"content-length"]
                headers += [
                    (b"content-length", str(len(packed)).encode()),
                    (b"content-encoding", coding.encode()),
                    (b"vary", b"Accept-Encoding"),
                ]
                start = {**start, "headers": headers}
                message = {**message, "body": packed}
        await send(start)
        await send(message)

    return compressing
