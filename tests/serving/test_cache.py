"""The response cache: LRU, TTL, bounds, canonical keys."""

from __future__ import annotations

import numpy as np
import pytest

from pitstop.errors import InvalidInput
from pitstop.registry.options import CacheOptions
from pitstop.serving.cache import (
    MAX_KEYED_BYTES,
    MAX_KEYED_ELEMENTS,
    ResponseCache,
    cacheable,
    request_digest,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def out(value: float, n: int = 1) -> dict[str, np.ndarray]:
    return {"y": np.full(n, value, dtype=np.float64)}


def test_hit_miss_and_lru_eviction() -> None:
    cache = ResponseCache(CacheOptions(max_entries=2))
    cache.put(b"a", out(1))
    cache.put(b"b", out(2))
    assert cache.get(b"a") is not None  # a is now the most recent
    cache.put(b"c", out(3))  # evicts b
    assert cache.get(b"b") is None
    assert cache.get(b"c")["y"][0] == 3
    assert (cache.hits, cache.misses) == (2, 1)


def test_entries_expire() -> None:
    clock = Clock()
    cache = ResponseCache(CacheOptions(ttl_s=10), clock=clock)
    cache.put(b"a", out(1))
    clock.now = 9.9
    assert cache.get(b"a") is not None
    clock.now = 10.1
    assert cache.get(b"a") is None
    assert len(cache) == 0


def test_byte_bound() -> None:
    cache = ResponseCache(CacheOptions(max_bytes=800))
    cache.put(b"big", out(1, n=200))  # 1600 bytes: never stored
    assert cache.get(b"big") is None
    for key in (b"a", b"b", b"c"):
        cache.put(key, out(1, n=40))  # 320 bytes each
    assert cache.size_bytes <= 800
    assert cache.get(b"a") is None
    assert cache.get(b"c") is not None


def test_cached_arrays_are_read_only() -> None:
    cache = ResponseCache(CacheOptions())
    cache.put(b"a", out(1))
    with pytest.raises(ValueError, match="read-only"):
        cache.get(b"a")["y"][0] = 5


def test_digest_is_canonical() -> None:
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    same = np.array([[0, 1], [2, 3]], dtype=np.float32)
    assert request_digest({"x": x}, []) == request_digest({"x": same}, [])
    assert request_digest({"x": x}, []) != request_digest({"x": x.astype(np.float64)}, [])
    assert request_digest({"x": x}, []) != request_digest({"x": x.reshape(4)}, [])
    assert request_digest({"x": x}, []) != request_digest({"x": x}, ["label"])
    texts = np.array([b"ab", b"c"], dtype=object)
    assert request_digest({"t": texts}, []) != request_digest(
        {"t": np.array([b"a", b"bc"], dtype=object)}, []
    )


def test_cache_options() -> None:
    assert CacheOptions.parse(None) is None
    assert CacheOptions.parse({"enabled": False}) is None
    assert CacheOptions.parse({"enabled": True, "ttl_s": 5}).ttl_s == 5
    with pytest.raises(InvalidInput, match=r"cache\.ttl_s"):
        CacheOptions.parse({"enabled": True, "ttl_s": -1})


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.zeros((4, 4), np.float32)}, True),
        ({"x": np.zeros(MAX_KEYED_BYTES // 8 + 1, np.float64)}, False),
        ({"t": np.array([b"a"] * MAX_KEYED_ELEMENTS, dtype=object)}, True),
        ({"t": np.array([b"a"] * (MAX_KEYED_ELEMENTS + 1), dtype=object)}, False),
    ],
)
def test_only_requests_small_enough_to_hash_on_the_event_loop_are_cached(
    arrays: dict[str, np.ndarray], expected: bool
) -> None:
    assert cacheable(arrays) is expected
    cache = ResponseCache(CacheOptions())
    cache.put(b"k", arrays)
    assert (cache.get(b"k") is not None) is expected
