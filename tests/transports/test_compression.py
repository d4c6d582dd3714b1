"""Content-Encoding: the codings read and chosen (tables) and the bounded inflater."""

from __future__ import annotations

import gzip
import zlib

import pytest

from pitstop import errors
from pitstop.transports.compression import PIECE, Inflater, compressed, request_coding
from pitstop.transports.compression import response_coding as chosen


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("GZIP ", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
    ],
)
def test_request_codings(header: str | None, coding: str | None) -> None:
    assert request_coding(header) == coding


@pytest.mark.parametrize("header", ["br", "zstd", "gzip, deflate", "compress"])
def test_other_request_codings_are_refused_naming_them(header: str) -> None:
    with pytest.raises(errors.UnsupportedMediaType, match=f"Content-Encoding '{header}'"):
        request_coding(header)


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate", "gzip"),
        ("deflate, gzip", "gzip"),  # a tie: gzip
        ("gzip;q=0.5, deflate", "deflate"),
        ("gzip;q=0, deflate;q=0", None),
        ("*", "gzip"),
        ("*;q=0.2, gzip;q=0", "deflate"),
        ("br, zstd", None),
        ("gzip;q=bad", None),
        ("gzip;q=7", None),
        ("x-gzip", "gzip"),
        ("GZip ; Q=0.9", "gzip"),
    ],
)
def test_response_codings(header: str | None, coding: str | None) -> None:
    assert chosen(header) == coding


def inflate(coding: str, body: bytes, limit: int = 1 << 30, chunk: int = 1 << 20) -> bytes:
    inflater = Inflater(coding, limit)
    pieces = []
    for start in range(0, len(body), chunk):
        pieces += inflater.feed(body[start : start + chunk])
    inflater.finish()
    assert all(len(piece) <= PIECE for piece in pieces)
    return b"".join(pieces)


DATA = bytes(range(256)) * 4000


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(DATA)),
        ("gzip", gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])),  # two members
        ("deflate", zlib.compress(DATA)),  # zlib format, as RFC 9110 says
        ("deflate", zlib.compress(DATA, wbits=-15)),  # raw deflate, as some clients send
        ("gzip", compressed(DATA, "gzip")),
        ("deflate", compressed(DATA, "deflate")),
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 65536])
def test_inflates_in_any_chunking(coding: str, body: bytes, chunk: int) -> None:
    assert inflate(coding, body, chunk=chunk) == DATA


def test_an_empty_body_is_fine() -> None:
    assert inflate("gzip", b"") == b""


@pytest.mark.parametrize(
    ("coding", "body", "message"),
    [
        ("gzip", b"not gzip at all", "not valid gzip data"),
        ("deflate", b"\x78\x9c garbage", "not valid deflate data"),
        ("gzip", gzip.compress(DATA)[:-20], "ends before its compressed stream"),
        ("deflate", b"x", "ends before its compressed stream"),
        ("deflate", zlib.compress(b"a") + b"tail", "data after the end of the stream"),
        ("gzip", gzip.compress(b"a") + b"tail", "not valid gzip data"),
    ],
)
def test_bad_streams_are_invalid_input(coding: str, body: bytes, message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message) as caught:
        inflate(coding, body)
    assert not isinstance(caught.value, errors.PayloadTooLarge)


def test_a_bomb_stops_at_the_limit_having_inflated_little_more() -> None:
    bomb = gzip.compress(bytes(200 * 1024 * 1024), compresslevel=9)  # ~200 KB on the wire
    assert len(bomb) < 300_000
    limit = 1024 * 1024
    inflater = Inflater("gzip", limit)
    produced: list[int] = []

    def feed_all() -> None:
        for start in range(0, len(bomb), 65536):
            produced.extend(map(len, inflater.feed(bomb[start : start + 65536])))

    with pytest.raises(errors.PayloadTooLarge, match="once decompressed"):
        feed_all()
    assert sum(produced) <= limit
