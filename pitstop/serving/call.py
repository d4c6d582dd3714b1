"""One call into the DataPlane and the progress of each attempt to serve it.

A :class:`Call` is what :meth:`DataPlane.infer` was asked (deadline, cache, transport, when it
began); a policy's fallback serves the same call again with its reason set. A :class:`Progress`
notes what one attempt on one leased version did (checked inputs, cache use, the runtime call)
so that, however the attempt ends, it becomes one
:class:`~pitstop.monitoring.attempt.Attempt` for the observers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np

from pitstop.errors import PitstopError
from pitstop.monitoring.attempt import NO_OUTPUTS, Attempt, CacheUse
from pitstop.protocol.tensor import InferRequest
from pitstop.serving.execution import Executed
from pitstop.serving.lease import LoadedVersion

NOT_EXECUTED: Final = Executed({}, 0, 0, 0, counts_execution=False)
"""What an attempt no runtime call served records (batch size 0)."""


@dataclass(frozen=True)
class Call:
    """How one :meth:`DataPlane.infer` call is served, whichever version ends up serving it."""

    metadata: Mapping[str, str] | None
    deadline: float | None
    """Monotonic instant the request expires at; None: the server default."""
    use_cache: bool
    transport: str
    started_ns: int
    fallback: str | None = None
    """Set on the call a policy's fallback serves: why the chosen arm did not answer."""
    principal: str | None = None
    """Who sent it (the security gate's principal), for the access log."""
    prediction_id: str | None = None
    """The answer's prediction id (the request's id, or a generated one); None: not recorded
    as a prediction (the response keeps the request's id)."""


class Progress:
    """What one attempt on a leased version did so far; :meth:`attempt` turns it into the
    record the observers get."""

    __slots__ = ("cache", "cache_ns", "executed", "inputs", "loaded", "submitted_wall_ns")

    def __init__(self, loaded: LoadedVersion) -> None:
        self.loaded = loaded
        self.inputs: dict[str, np.ndarray] | None = None
        self.cache = CacheUse.NONE
        self.cache_ns = 0
        self.submitted_wall_ns = 0
        self.executed: Executed | None = None

    def attempt(
        self,
        request: InferRequest,
        call: Call,
        started: int,
        ended: int,
        error: PitstopError | None,
        routed: bool,
        *,
        final: bool = True,
        outputs: Mapping[str, np.ndarray] = NO_OUTPUTS,
        arm: str = "",
    ) -> Attempt:
        record, metadata, executed = self.loaded.record, self.loaded.metadata, self.executed
        if executed is None:
            executed = NOT_EXECUTED
        return Attempt(
            model=record.model,
            registered=True,
            version=record.number,
            digest=record.digest,
            transport=call.transport,
            request=request,
            metadata=call.metadata,
            principal=call.principal,
            prediction_id=call.prediction_id,
            arm=arm,
            started_ns=started,
            elapsed_ns=ended - started,
            request_ns=ended - call.started_ns,
            error=error,
            routed=routed,
            final=final,
            fallback=call.fallback,
            inputs=self.inputs,
            outputs=outputs,
            rows=rows_of(outputs) if error is None else 0,
            centroids=metadata.centroids if metadata is not None else {},
            cache=self.cache,
            cache_ns=self.cache_ns,
            submitted_wall_ns=self.submitted_wall_ns,
            queue_ns=executed.queue_ns,
            compute_ns=executed.compute_ns,
            batch_size=executed.batch_size,
            counts_execution=executed.counts_execution,
        )


def rows_of(outputs: Mapping[str, np.ndarray]) -> int:
    """Rows of the batch dimension in a response (1 for a scalar or an empty response)."""
    for array in outputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1
