"""Reading HTTP request bodies under a size limit, for every Starlette route of pitstop."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from pitstop import errors


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it (or its declared length) passes
    ``limit`` bytes: an oversized body is never buffered whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes"
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
