"""Reading HTTP request bodies under a size limit, for every route of pitstop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request

from pitstop import errors
from pitstop.protocol.reference import natural


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it (or its declared length) passes
    ``limit`` bytes: an oversized body is never buffered whole."""
    return await read_stream(request.headers.get("content-length"), request.stream(), limit)


async def read_stream(declared: str | None, stream: AsyncIterator[bytes], limit: int) -> bytes:
    """:func:`read_body` over any stream of chunks, given the declared Content-Length."""
    size = None if declared is None else natural(declared)
    if size is not None and size > limit:
        raise errors.PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes"
        )
    chunks = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: Request, limit: int, *, optional: bool = False) -> Any:
    """The body parsed as JSON (None for an empty body when ``optional``); InvalidInput when
    it is not JSON."""
    body = await read_body(request, limit)
    if optional and not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidInput(f"request body is not valid JSON: {exc}") from exc


async def read_json_object(
    request: Request, limit: int, *, optional: bool = False
) -> dict[str, Any]:
    """Like :func:`read_json`, and the value must be a JSON object ({} for an empty optional
    body)."""
    value = await read_json(request, limit, optional=optional)
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise errors.InvalidInput("request body must be a JSON object")
    return value
