"""The wire between a server and its model worker process (:mod:`pitstop.runtimes.isolated`,
:mod:`pitstop.runtimes.worker`): frames, arrays, contexts, metadata and errors as data.

A frame is ``<u32 header length><u32 payload length><header><payload>``, little-endian. The
header is a JSON object (orjson, a declared dependency of pitstop); the payload holds the raw
bytes of the arrays the header describes. Nothing is ever pickled: a worker runs untrusted code,
and the server must be able to read anything it sends without running it.

Arrays in a payload start at offsets aligned to :data:`ALIGNMENT` bytes (the header is padded
with spaces so the payload starts aligned too). A numeric array is described as
``{"name", "dtype": numpy dtype string, "shape", "offset", "nbytes"}`` and sent as its raw
C-ordered buffer. A BYTES (object) array is ``{"name", "bytes": true, "shape", "offset",
"nbytes"}``: ``count`` little-endian u32 lengths, then the elements back to back; ``str``
elements travel as UTF-8.

The exchange is strictly one request, one answer: the server writes a frame with ``"op"``
(``"load"``, ``"predict"`` or ``"stop"``) and reads the worker's answer, ``{"ok": true, ...}`` or
``{"ok": false, "error": {...}}`` (see :func:`error_header`), or ``{"ok": false, "fatal":
"memory"}`` after which the worker exits.
"""

from __future__ import annotations

import builtins
import math
import os
import select
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from pitstop import errors
from pitstop.errors import InternalError, PitstopError
from pitstop.protocol.tensor import TensorSpec
from pitstop.runtimes.base import RuntimeContext, RuntimeMetadata

Header = dict[str, Any]
"""A decoded frame header (a JSON object)."""

Buffer = bytes | bytearray | memoryview
"""What a frame's payload is written from."""

ALIGNMENT: Final = 16
"""Byte alignment of each array's data inside a frame, so decoded arrays are aligned."""

EXIT_OUT_OF_MEMORY: Final = 75
"""The exit code of a worker that hit MemoryError outside a request it could answer."""

PARENT_ENV: Final = "PITSTOP_WORKER_PARENT"
"""Environment variable holding the server's pid, so a worker can tell it was orphaned."""

_PREFIX: Final = struct.Struct("<II")
_LENGTHS: Final = np.dtype("<u4")
_ZEROS: Final = bytes(ALIGNMENT)
_MAX_PARTS: Final = 512  # well under IOV_MAX (1024 on Linux)
_SCALARS: Final = (str, int, float, bool, type(None))


class ChannelClosed(Exception):
    """The other side closed its end of the pipe (it exited or died)."""


class ChannelTimeout(Exception):
    """No complete frame arrived before the deadline."""


class FrameReader:
    """Reads whole frames from a pipe's file descriptor. Not thread-safe: one reader per pipe,
    used by one thread at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._leftover = b""

    def read(self, deadline: float | None) -> tuple[Header, memoryview]:
        """The next frame's header and payload. ``deadline`` (monotonic clock; None: wait for
        ever) bounds the whole frame: :class:`ChannelTimeout` past it, :class:`ChannelClosed`
        when the pipe ends first. The payload is a view of a fresh writable buffer."""
        data = self._leftover
        self._leftover = b""
        while len(data) < _PREFIX.size:
            data += self._chunk(65536, deadline)
        header_size, payload_size = _PREFIX.unpack_from(data)
        total = _PREFIX.size + header_size + payload_size
        buffer = bytearray(total)
        have = min(len(data), total)
        buffer[:have] = data[:have]
        self._leftover = data[total:]
        view = memoryview(buffer)
        while have < total:
            self._wait(deadline)
            got = os.readv(self._fd, [view[have:]])
            if got == 0:
                raise ChannelClosed
            have += got
        header = orjson.loads(view[_PREFIX.size : _PREFIX.size + header_size])
        if not isinstance(header, dict):
            raise InternalError("a model worker frame's header is not a JSON object")
        return header, view[_PREFIX.size + header_size :]

    def _chunk(self, size: int, deadline: float | None) -> bytes:
        self._wait(deadline)
        chunk = os.read(self._fd, size)
        if not chunk:
            raise ChannelClosed
        return chunk

    def _wait(self, deadline: float | None) -> None:
        if deadline is None:
            return  # a blocking read waits
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._poll.poll(math.ceil(remaining * 1000)):
            raise ChannelTimeout


def write_frame(fd: int, header: Header, buffers: Sequence[Buffer] = ()) -> None:
    """Write one frame to ``fd`` (blocking), in one system call when the pipe takes it whole.
    ``buffers`` are the payload, laid out as :func:`encode_arrays` described them. Raises
    :class:`ChannelClosed` when the reader is gone."""
    body = orjson.dumps(header)
    pad = -(_PREFIX.size + len(body)) % ALIGNMENT
    payload_size = sum(_nbytes(b) for b in buffers)
    first = _PREFIX.pack(len(body) + pad, payload_size) + body + b" " * pad
    parts: list[Buffer] = [first, *buffers]
    if len(parts) > _MAX_PARTS:
        parts = [first, b"".join(buffers)]
    try:
        sent = os.writev(fd, parts)
        if sent < len(first) + payload_size:
            _write_rest(fd, parts, sent)
    except (BrokenPipeError, ConnectionResetError):
        raise ChannelClosed from None


def _write_rest(fd: int, parts: Sequence[Buffer], sent: int) -> None:
    for part in parts:
        view = memoryview(part)
        if sent >= len(view):
            sent -= len(view)
            continue
        view = view[sent:]
        sent = 0
        while view:
            view = view[os.write(fd, view) :]


def _nbytes(buffer: Buffer) -> int:
    return buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)


def encode_arrays(arrays: Mapping[str, object]) -> tuple[list[Header], list[Buffer]]:
    """Descriptions of ``arrays`` for a header, and the payload buffers (no copies of numeric
    C-contiguous arrays). Raises :class:`InternalError` for an array that cannot cross: a
    structured or void dtype, or an object array holding something other than bytes/str."""
    entries: list[Header] = []
    buffers: list[Buffer] = []
    offset = 0
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind == "O":
            data: Buffer = _pack_bytes(name, array)
            entry: Header = {"name": name, "bytes": True, "shape": list(array.shape)}
        elif array.dtype.kind in "biufcSUMm" and array.dtype.fields is None:
            data = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
            entry = {"name": name, "dtype": array.dtype.str, "shape": list(array.shape)}
        else:
            raise InternalError(f"tensor {name!r}: numpy dtype {array.dtype} cannot be sent")
        size = _nbytes(data)
        entry["offset"] = offset
        entry["nbytes"] = size
        entries.append(entry)
        buffers.append(data)
        pad = -size % ALIGNMENT
        if pad:
            buffers.append(_ZEROS[:pad])
        offset += size + pad
    return entries, buffers


def _pack_bytes(name: str, array: np.ndarray) -> bytes:
    items: list[bytes] = []
    for item in array.ravel().tolist():
        if isinstance(item, bytes):
            items.append(item)
        elif isinstance(item, str):
            items.append(item.encode("utf-8"))
        elif isinstance(item, bytearray | memoryview):
            items.append(bytes(item))
        else:
            raise InternalError(
                f"tensor {name!r}: BYTES elements must be bytes or str, not {type(item).__name__}"
            )
    lengths = np.fromiter(map(len, items), dtype=_LENGTHS, count=len(items))
    pad = -lengths.nbytes % ALIGNMENT
    return lengths.tobytes() + _ZEROS[:pad] + b"".join(items)


def decode_arrays(entries: Sequence[Header], payload: memoryview) -> dict[str, np.ndarray]:
    """The arrays :func:`encode_arrays` described, as views of ``payload`` (numeric) or object
    arrays of ``bytes`` (BYTES)."""
    arrays: dict[str, np.ndarray] = {}
    for entry in entries:
        shape = tuple(entry["shape"])
        offset: int = entry["offset"]
        if entry.get("bytes"):
            count = math.prod(shape)
            lengths = np.frombuffer(payload, dtype=_LENGTHS, count=count, offset=offset)
            start = offset + lengths.nbytes + (-lengths.nbytes % ALIGNMENT)
            values = np.empty(count, dtype=object)
            for index, length in enumerate(lengths.tolist()):
                values[index] = bytes(payload[start : start + length])
                start += length
            arrays[entry["name"]] = values.reshape(shape)
        else:
            dtype = np.dtype(entry["dtype"])
            count = entry["nbytes"] // dtype.itemsize if dtype.itemsize else 0
            flat = np.frombuffer(payload, dtype=dtype, count=count, offset=offset)
            arrays[entry["name"]] = flat.reshape(shape)
    return arrays


def spec_from_json(body: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(str(body["name"]), str(body["datatype"]), tuple(body["shape"]))


def context_to_json(
    runtime: str, context: RuntimeContext, memory_limit_bytes: int | None
) -> Header:
    """The ``load`` frame's header: which runtime to build, with what, under which limit.
    Raises :class:`InternalError` when the manifest's parameters are not JSON."""
    body: Header = {
        "op": "load",
        "runtime": runtime,
        "memory_limit_bytes": memory_limit_bytes,
        "path": str(context.path),
        "artifact": context.artifact,
        "inputs": [s.to_json() for s in context.inputs],
        "outputs": [s.to_json() for s in context.outputs],
        "parameters": dict(context.parameters),
        "columns": list(context.columns),
        "trust_pickle": context.trust_pickle,
        "trust_code": context.trust_code,
        "threads": context.threads,
    }
    try:
        orjson.dumps(body)
    except TypeError as exc:
        raise InternalError(f"the model's parameters cannot be sent to a worker: {exc}") from exc
    return body


def context_from_json(body: Mapping[str, Any]) -> RuntimeContext:
    return RuntimeContext(
        path=Path(body["path"]),
        artifact=body["artifact"],
        inputs=tuple(spec_from_json(s) for s in body["inputs"]),
        outputs=tuple(spec_from_json(s) for s in body["outputs"]),
        parameters=body["parameters"],
        columns=tuple(body["columns"]),
        trust_pickle=bool(body["trust_pickle"]),
        trust_code=bool(body["trust_code"]),
        threads=int(body["threads"]),
    )


def metadata_to_json(metadata: RuntimeMetadata) -> Header:
    return {
        "platform": metadata.platform,
        "inputs": [s.to_json() for s in metadata.inputs],
        "outputs": [s.to_json() for s in metadata.outputs],
        "decoupled": metadata.decoupled,
        "summed_outputs": list(metadata.summed_outputs),
        "centroids": {name: list(values) for name, values in metadata.centroids.items()},
    }


def metadata_from_json(body: Mapping[str, Any]) -> RuntimeMetadata:
    return RuntimeMetadata(
        platform=str(body["platform"]),
        inputs=tuple(spec_from_json(s) for s in body["inputs"]),
        outputs=tuple(spec_from_json(s) for s in body["outputs"]),
        decoupled=bool(body["decoupled"]),
        summed_outputs=tuple(body["summed_outputs"]),
        centroids={name: tuple(values) for name, values in body["centroids"].items()},
    )


def error_header(error: BaseException) -> Header:
    """``error`` as data. A pitstop error travels as its nearest class in
    :mod:`pitstop.errors` and its message; any other exception as its class name, whether it
    is a builtin, its arguments when they are all JSON scalars, and its message."""
    for cls in type(error).__mro__:
        if cls.__module__ == errors.__name__ and issubclass(cls, PitstopError):
            return {"kind": "pitstop", "type": cls.__name__, "message": str(error)}
    scalars = all(isinstance(arg, _SCALARS) for arg in error.args)
    return {
        "kind": "python",
        "type": type(error).__name__,
        "builtin": type(error).__module__ == builtins.__name__,
        "args": list(error.args) if scalars else None,
        "message": str(error),
    }


def error_from_header(body: Mapping[str, Any]) -> Exception:
    """The exception :func:`error_header` described, as the in-process runtime would have
    raised it: the same pitstop error class, the same builtin exception (``KeyError('x')``),
    or a ``RuntimeError("Type: message")`` for a class the server cannot rebuild."""
    name = str(body.get("type"))
    message = str(body.get("message"))
    if body.get("kind") == "pitstop":
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, PitstopError):
            return cls(message)
        return InternalError(message)
    args = body.get("args")
    builtin = getattr(builtins, name, None) if body.get("builtin") else None
    if isinstance(builtin, type) and issubclass(builtin, Exception) and isinstance(args, list):
        try:
            return builtin(*args)
        except Exception:
            pass  # a constructor that wants other arguments: fall back to the message
    return RuntimeError(f"{name}: {message}")
