"""The response cache: opt-in per version, LRU with a time-to-live and entry/byte bounds.

A version's cache holds outputs keyed by a canonical digest of the request (input names,
datatypes, shapes and bytes, plus the requested output names), so the key space is
(model, version, request digest). It is never used for a version flagged non-deterministic, and
callers must not use it for shadow traffic. Everything runs on the event loop: no locks.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import numpy as np

from pitstop.registry.options import CacheOptions

Outputs = dict[str, np.ndarray]


MAX_KEYED_BYTES: Final = 1024 * 1024
"""Requests whose tensors hold more bytes than this bypass the cache: hashing them on the event
loop would cost more than a hit saves (and such requests rarely repeat)."""

MAX_KEYED_ELEMENTS: Final = 16_384
"""Likewise for BYTES elements, which are hashed one by one (and outputs, measured one by one)."""


def cacheable(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether a request with these inputs (or a response with these outputs) is small enough to
    key or store: see :data:`MAX_KEYED_BYTES` and :data:`MAX_KEYED_ELEMENTS`."""
    objects = sum(a.size for a in arrays.values() if a.dtype.kind == "O")
    total = sum(a.nbytes for a in arrays.values() if a.dtype.kind != "O")
    return objects <= MAX_KEYED_ELEMENTS and total <= MAX_KEYED_BYTES


def request_digest(inputs: Mapping[str, np.ndarray], requested: Sequence[str]) -> bytes:
    """A canonical digest: the same tensors give the same key whatever the wire encoding."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        array = inputs[name]
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        if array.dtype.kind == "O":
            for item in array.reshape(-1):
                value = item if isinstance(item, bytes) else str(item).encode()
                digest.update(len(value).to_bytes(4, "little"))
                digest.update(value)
        else:
            digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(("\0".join(requested)).encode())
    return digest.digest()


def _size(outputs: Outputs) -> int:
    total = 0
    for array in outputs.values():
        if array.dtype.kind == "O":
            total += sum(len(item) if isinstance(item, bytes) else 64 for item in array.flat)
        else:
            total += array.nbytes
    return total


class ResponseCache:
    def __init__(self, options: CacheOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self._options = options
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, int, Outputs]] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: bytes) -> Outputs | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[2]

    def put(self, key: bytes, outputs: Outputs) -> None:
        if not cacheable(outputs):
            return
        size = _size(outputs)
        if size > self._options.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        for array in outputs.values():
            array.flags.writeable = False  # shared between responses from now on
        self._entries[key] = (self._clock() + self._options.ttl_s, size, outputs)
        self._bytes += size
        while (
            len(self._entries) > self._options.max_entries or self._bytes > self._options.max_bytes
        ):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: bytes) -> None:
        _expires, size, _outputs = self._entries.pop(key)
        self._bytes -= size
