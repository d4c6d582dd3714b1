"""One record per attempt to serve a request, and the Protocol of everything that observes it.

The DataPlane builds one frozen :class:`Attempt` when an attempt on one version ends (served,
failed, or refused before a version was chosen) and hands it to each :class:`Observer` the
composition root gave it, in order: the statistics extension, Prometheus series, rollout
windows, embedding behaviour, drift, request logs and trace annotations all read the same
record, so a figure is measured once and cannot disagree between them.

A request is usually one attempt. A policy-routed request whose arm fails with a server failure
and that its policy's fallback then answers is two: the failed arm (``final`` false) and the
fallback (``fallback`` names why). A shadow copy is an attempt of its own (transport
``shadow``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np

from pitstop.errors import PitstopError
from pitstop.protocol.tensor import InferRequest

log = logging.getLogger(__name__)

NO_OUTPUTS: Final[Mapping[str, np.ndarray]] = {}


class CacheUse(enum.Enum):
    NONE = "none"
    """The response cache was not consulted (off, bypassed, or the attempt failed first)."""
    HIT = "hit"
    MISS = "miss"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened to one attempt. Times are nanoseconds; ``started_ns`` is monotonic."""

    model: str
    """The model as the caller named it; see ``registered``."""
    registered: bool
    """The registry has ``model``: it may become a metric label (a client's random names must
    not)."""
    version: int | None
    """The version that served or failed; None when the attempt failed before one was chosen
    (unknown model or alias, nothing loaded, body refused by the transport)."""
    digest: str
    transport: str
    """rest, grpc, openai, shadow, ... (a bounded set)."""
    request: InferRequest | None
    """None when the transport refused the body before it became a request."""
    metadata: Mapping[str, str] | None
    """Lower-cased request headers / gRPC metadata, when the transport passed them."""
    started_ns: int
    elapsed_ns: int
    """This attempt's duration."""
    request_ns: int
    """Time since the caller's request began (covers a failed arm before a fallback)."""
    error: PitstopError | None = None
    routed: bool = False
    """A traffic policy chose this version (rollout windows judge only such attempts)."""
    final: bool = True
    """Its outcome is what the caller gets (false for a failed arm a fallback answers)."""
    fallback: str | None = None
    """Why a policy's fallback answered (error, overloaded, deadline, unavailable), or None."""
    inputs: Mapping[str, np.ndarray] | None = None
    """The request's inputs once checked against the signature; None if that never happened."""
    outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    """The selected outputs of a served attempt (empty when it failed)."""
    rows: int = 0
    """Rows of the batch dimension answered (0 when it failed)."""
    centroids: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """The version's reference embedding centroids per output (see RuntimeMetadata)."""
    cache: CacheUse = CacheUse.NONE
    cache_ns: int = 0
    """Time spent looking the request up in the cache."""
    submitted_wall_ns: int = 0
    """Wall-clock time the request was queued for the runtime (0: it was not)."""
    queue_ns: int = 0
    compute_ns: int = 0
    batch_size: int = 0
    """Requests in the runtime call that served it; 0 when no runtime call did."""
    counts_execution: bool = False
    """This attempt carries its runtime call's compute time and batch size (one attempt per
    call does, so a batch is counted once)."""
    principal: str | None = None
    """Who sent the request (``token:<name>``, ``cert:<cn>``, ``anonymous``), when the
    transport says: the access log's principal."""
    prediction_id: str | None = None
    """The answer's prediction id (its response id); None when this attempt's answer is not
    recorded as a prediction (a shadow copy, a stream consumer that records per message)."""
    arm: str = ""
    """The traffic policy's arm (alias or version number) that served it; "" when the caller
    named the version or no policy was in force."""

    @property
    def executed(self) -> bool:
        return self.batch_size > 0

    @property
    def ok(self) -> bool:
        return self.error is None


class Observer(Protocol):
    """Something that learns from every attempt (metrics, statistics, windows, logs, spans).

    :meth:`observe_attempt` is called on the event loop, in the task of the request (so the
    request's trace context is current), once per attempt, after it ended and before the caller
    gets its answer. It must be O(1) or O(rows) with no I/O and no blocking, and should not
    raise: an exception is logged and the remaining observers still run, the request is
    answered as if nothing happened."""

    def observe_attempt(self, attempt: Attempt) -> None: ...


def notify(observers: Sequence[Observer], attempt: Attempt) -> None:
    """Hand ``attempt`` to each observer; a failing observer never fails the request."""
    for observer in observers:
        try:
            observer.observe_attempt(attempt)
        except Exception:
            log.exception("observer %s failed on an attempt", type(observer).__name__)
