"""OpenTelemetry tracing: the only module that imports ``opentelemetry``.

Spans per request: ``pitstop.request`` (SERVER; its parent is the caller's W3C ``traceparent``
when there is one) → ``pitstop.queue`` and ``pitstop.batch`` → ``pitstop.compute``; a shadow copy
runs as ``pitstop.shadow`` under the request that caused it, with its own queue/batch/compute.
Queue, batch and compute spans are written after the fact from the measured durations (the
batcher and worker threads never see a span), with their real start and end times.

Off by default. When off the DataPlane holds no :class:`Tracing` and creates nothing: the cost is
one ``is None`` check per request. OpenTelemetry is imported only when a :class:`Tracing` is
built (imports inside functions, on purpose: it is an optional extra, ``pitstop[otel]``, and a
server with tracing off should not even load it). Its objects stay inside this module.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any, Final

from pitstop.monitoring.attempt import Attempt

SERVICE: Final = "pitstop"


def available() -> bool:
    """Whether the OpenTelemetry SDK (the ``otel`` extra) is installed."""
    return importlib.util.find_spec("opentelemetry.sdk") is not None


class RequestSpan:
    """A request's (or shadow copy's) span, current in this task until :meth:`end`."""

    __slots__ = ("_detach", "_span", "_token")

    def __init__(self, span: Any, token: Any, detach: Any) -> None:
        self._span = span
        self._token = token
        self._detach = detach

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            self._span.record_exception(error)
            self._span.set_status(_error_status(str(error)))
            self._span.set_attribute("error.type", type(error).__name__)
        self._span.end()
        self._detach(self._token)


class Tracing:
    """A tracer with its own provider (the process-global one is left alone)."""

    def __init__(self, exporter: object, sample_ratio: float = 1.0, batch: bool = True) -> None:
        """``exporter`` is an OpenTelemetry ``SpanExporter`` (tests pass an in-memory one,
        exported synchronously with ``batch=False``)."""
        from opentelemetry import context, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._context: Any = context
        self._trace: Any = trace
        self._propagator: Any = TraceContextTextMapPropagator()
        sampler = ParentBased(TraceIdRatioBased(sample_ratio))
        self._provider = TracerProvider(
            sampler=sampler, resource=Resource.create({"service.name": SERVICE})
        )
        spans: Any = exporter
        processor = BatchSpanProcessor(spans) if batch else SimpleSpanProcessor(spans)
        self._provider.add_span_processor(processor)
        self._tracer: Any = self._provider.get_tracer("pitstop")

    @classmethod
    def from_settings(
        cls, exporter: str, endpoint: str | None, sample_ratio: float
    ) -> Tracing | None:
        """``none`` → None (tracing off); ``console``; ``otlp`` (gRPC, to ``endpoint``)."""
        if exporter == "none":
            return None
        if not available():
            raise RuntimeError(
                f"tracing_exporter={exporter!r} needs OpenTelemetry: pip install 'pitstop[otel]'"
            )
        if exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return cls(ConsoleSpanExporter(service_name=SERVICE), sample_ratio)
        if exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return cls(OTLPSpanExporter(endpoint=endpoint), sample_ratio)
        raise ValueError(f"unknown tracing exporter {exporter!r}")

    def request(
        self,
        name: str,
        carrier: Mapping[str, str] | None,
        attributes: Mapping[str, str | int],
        server: bool = True,
    ) -> RequestSpan:
        """Start a span and make it current. With ``carrier`` (lower-cased headers or gRPC
        metadata) its parent is the caller's ``traceparent``; without, the current span."""
        trace = self._trace
        parent = self._propagator.extract(carrier) if carrier is not None else None
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=trace.SpanKind.SERVER if server else trace.SpanKind.INTERNAL,
            attributes=dict(attributes),
        )
        token = self._context.attach(trace.set_span_in_context(span, parent))
        return RequestSpan(span, token, self._context.detach)

    def observe_attempt(self, attempt: Attempt) -> None:
        """Queue, batch and compute spans of an attempt a runtime call served, and the version
        (digest, fallback) that answered on the current request or shadow span."""
        if attempt.executed:
            self.execution(
                attempt.submitted_wall_ns, attempt.queue_ns, attempt.compute_ns,
                attempt.batch_size,
            )  # fmt: skip
        if attempt.final and attempt.error is None and attempt.version is not None:
            span = self._trace.get_current_span()
            span.set_attribute("pitstop.version", attempt.version)
            span.set_attribute("pitstop.digest", attempt.digest)
            if attempt.fallback is not None:
                span.set_attribute("pitstop.fallback", attempt.fallback)

    def current_trace_id(self) -> str | None:
        """The current span's trace id (32 hex digits, as in ``traceparent``), or None."""
        context = self._trace.get_current_span().get_span_context()
        return f"{context.trace_id:032x}" if context.is_valid else None

    def execution(self, submitted_ns: int, queue_ns: int, compute_ns: int, batch_size: int) -> None:
        """Queue, batch and compute spans under the current span, from measured durations.
        ``submitted_ns`` is wall-clock (``time.time_ns()``) when the request was queued."""
        parent = self._context.get_current()
        queued_until = submitted_ns + queue_ns
        queue = self._tracer.start_span("pitstop.queue", parent, start_time=submitted_ns)
        queue.end(end_time=queued_until)
        batch = self._tracer.start_span(
            "pitstop.batch", parent, start_time=queued_until,
            attributes={"pitstop.batch_size": batch_size},
        )  # fmt: skip
        compute = self._tracer.start_span(
            "pitstop.compute",
            self._trace.set_span_in_context(batch, parent),
            start_time=queued_until,
        )
        compute.end(end_time=queued_until + compute_ns)
        batch.end(end_time=queued_until + compute_ns)

    def shutdown(self) -> None:
        """Flush and stop exporting (blocking: call it from a thread at shutdown)."""
        self._provider.shutdown()


def _error_status(message: str) -> Any:
    from opentelemetry.trace import Status, StatusCode

    return Status(StatusCode.ERROR, message)
