"""Logs: JSON or text lines written by a background thread, and the per-request log.

:func:`configure` routes every logger (pitstop's and uvicorn's) through one bounded queue to a
listener thread that formats and writes, so a slow stderr never blocks the event loop; when the
queue is full a record is dropped and counted instead. Structured fields travel in
``extra={"fields": {...}}`` and become JSON keys (or ``key=value`` pairs in text).

:class:`RequestLog` writes one line per inference request (request id, model, version,
transport, status, latency) and, for a sampled share of them, the inputs and outputs, truncated,
with every tensor or parameter named in the redaction list replaced by ``"[REDACTED]"``.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any, Final

import numpy as np

from pitstop.errors import error_kind
from pitstop.monitoring.attempt import Attempt
from pitstop.protocol.tensor import InferRequest

QUEUE_SIZE: Final = 10_000
PAYLOAD_VALUES: Final = 16
"""Values per tensor kept in a payload log."""
REDACTED: Final = "[REDACTED]"
REQUEST_LOGGER: Final = "pitstop.requests"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__.get("fields")
        if isinstance(fields, Mapping):
            body.update(fields)
        if record.exc_text:
            body["exception"] = record.exc_text
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record.__dict__.get("fields")
        if isinstance(fields, Mapping):
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return line


class _BoundedQueueHandler(QueueHandler):
    """Drops (and counts) records when the queue is full, instead of blocking or raising."""

    def __init__(self, bounded: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(bounded)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Only what must happen now (merge args, render the traceback); formatting happens on
        # the listener thread.
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


def configure(log_format: str, level: str) -> Callable[[], None]:
    """Install the root handler; returns a function that flushes and stops the writer thread."""
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    bounded: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=QUEUE_SIZE)
    listener = QueueListener(bounded, writer)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_BoundedQueueHandler(bounded))
    root.setLevel(level.upper())
    listener.start()
    return listener.stop


class RequestLog:
    """One log line per request, at INFO on the ``pitstop.requests`` logger."""

    def __init__(
        self,
        payload_sample_rate: float = 0.0,
        redact: Iterable[str] = (),
        *,
        logger: logging.Logger | None = None,
        draw: Callable[[], float] = random.random,
        trace_id: Callable[[], str | None] | None = None,
    ) -> None:
        """``trace_id`` reads the current request's trace id (when tracing is on)."""
        self._rate = payload_sample_rate
        self._redact = frozenset(name.lower() for name in redact)
        self._logger = logger or logging.getLogger(REQUEST_LOGGER)
        self._draw = draw
        self._trace_id = trace_id

    def observe_attempt(self, attempt: Attempt) -> None:
        """One line per request the caller sent: its final attempt (a failed arm that a
        fallback answered, a shadow copy and a body refused before decoding are not lines)."""
        request = attempt.request
        if not attempt.final or request is None or attempt.transport == "shadow":
            return
        ok = attempt.error is None
        self.request(
            request, attempt.metadata, attempt.model, attempt.transport,
            (attempt.version or 0, attempt.fallback) if ok else None,
            attempt.outputs if ok else None,
            attempt.error, attempt.request_ns / 1e9,
            None if self._trace_id is None else self._trace_id(),
            attempt.principal,
        )  # fmt: skip

    def request(
        self,
        request: InferRequest,
        metadata: Mapping[str, str] | None,
        model: str,
        transport: str,
        answered: tuple[int, str | None] | None,
        outputs: Mapping[str, np.ndarray] | None,
        error: BaseException | None,
        seconds: float,
        trace_id: str | None,
        principal: str | None = None,
    ) -> None:
        """One request's line; ``answered`` is (version, fallback reason) when it succeeded."""
        fields: dict[str, Any] = {
            "request_id": request.id or (metadata or {}).get("x-request-id"),
            "model": model,
            "version": answered[0] if answered is not None else None,
            "transport": transport,
            "status": "ok" if error is None else error_kind(error),
            "latency_ms": round(seconds * 1e3, 3),
        }
        if principal is not None:
            fields["principal"] = principal
        if trace_id is not None:
            fields["trace_id"] = trace_id
        if answered is not None and answered[1] is not None:
            fields["fallback"] = answered[1]
        if error is not None:
            fields["error"] = str(error)
        self.log(fields, request, outputs)

    def log(
        self,
        fields: dict[str, Any],
        request: InferRequest,
        outputs: Mapping[str, np.ndarray] | None,
    ) -> None:
        """Log ``fields`` (request id, model, version, status, ...), with the payload for a
        sampled share of requests."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        if self._rate and self._draw() < self._rate:
            fields["inputs"] = {
                name: self._tensor(name, request.input_datatypes.get(name, array.dtype.name), array)
                for name, array in request.inputs.items()
            }
            fields["parameters"] = {
                key: REDACTED if key.lower() in self._redact else value
                for key, value in request.parameters.items()
            }
            if outputs is not None:
                fields["outputs"] = {
                    name: self._tensor(name, array.dtype.name, array)
                    for name, array in outputs.items()
                }
        self._logger.info("request", extra={"fields": fields})

    def _tensor(self, name: str, datatype: str, array: np.ndarray) -> Any:
        if name.lower() in self._redact:
            return REDACTED
        values = array.reshape(-1)[:PAYLOAD_VALUES].tolist()
        values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
        return {
            "datatype": datatype,
            "shape": list(array.shape),
            "data": values,
            "truncated": array.size > PAYLOAD_VALUES,
        }
