"""Per-principal request rates: one token bucket per token (or client certificate).

A bucket holds up to ``burst`` requests and refills at ``rate`` per second; a request takes one,
or is refused with how long until one is there (the 429's ``Retry-After``). Buckets are this
process's: with ``--workers N`` each worker enforces ``rate / N`` of the server's and of each
token's rate (the gate's ``share``), so the sum holds when the kernel spreads connections
evenly. The table of buckets is bounded: past :data:`MAX_BUCKETS` the longest idle one is
forgotten (it was full anyway, or nearly).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

MAX_BUCKETS: Final = 65_536


@dataclass
class Bucket:
    tokens: float
    at: float
    """When ``tokens`` was last computed (monotonic seconds)."""


class RateLimiter:
    """Token buckets by principal name. Not thread-safe: use it from one event loop."""

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._max = max_buckets

    def take(self, key: str, rate: float, burst: int, now: float) -> float:
        """Take one request from ``key``'s bucket: 0.0 when admitted, else the seconds until
        the next request would be (nothing is taken then). ``rate`` ≤ 0: unlimited."""
        if rate <= 0:
            return 0.0
        size = float(max(1, burst))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(size, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(size, bucket.tokens + max(0.0, now - bucket.at) * rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        wait = (1.0 - bucket.tokens) / rate
        return wait if math.isfinite(wait) else 1.0

    def __len__(self) -> int:
        return len(self._buckets)
