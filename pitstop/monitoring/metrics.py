"""Every Prometheus metric pitstop exports, defined here and only here (the one module that
imports ``prometheus_client``). docs/observability.md lists them with their labels and alerts.

Nothing is recorded through ``prometheus_client`` on the request path: requests are recorded
into plain-Python series (:mod:`pitstop.monitoring.requests`), and this module turns those, the
serving :class:`~pitstop.monitoring.inventory.Inventory`, drift scores and cost into metric
families when ``/metrics`` is scraped. A scrape therefore costs O(series) on the event loop and
a request costs no more than an attribute update. Labels are bounded: model and version come from
the registry, everything else from fixed tables (no request or user ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as _generate
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pitstop.monitoring.access import AccessRecorder
from pitstop.monitoring.cost import CostReport
from pitstop.monitoring.drift_monitor import DriftMonitor
from pitstop.monitoring.histogram import Histogram
from pitstop.monitoring.inventory import Inventory
from pitstop.monitoring.outcome import Estimate
from pitstop.monitoring.requests import RequestRecorder, VersionSeries
from pitstop.monitoring.streams import StreamRecorder

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
OutcomeRow = tuple[str, int, str, Estimate]
"""(model, version, arm, estimate)."""
STATES: Final = ("LOADING", "READY", "DRAINING", "UNLOADED", "FAILED")
MV: Final = ["model", "version"]


def _version(series: VersionSeries) -> str:
    return "" if series.version is None else str(series.version)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), float(count))
        for bound, count in histogram.cumulative()
    ]


class _Collector(Collector):
    def __init__(self, exporter: MetricsExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterable[Metric]:
        exporter = self._exporter
        build = InfoMetricFamily("pitstop_build", "The pitstop release serving.")
        build.add_metric([], {"version": exporter.server_version})
        yield build
        requests = exporter.requests() if exporter.requests is not None else None
        if requests is not None:
            yield from _request_families(requests)
        yield from _inventory_families(exporter.inventory())
        if exporter.drift is not None:
            yield from _drift_families(exporter.drift)
        if exporter.cost is not None:
            yield from _cost_families(exporter.cost())
        streams = exporter.streams() if exporter.streams is not None else None
        if streams is not None and len(streams):
            yield from _stream_families(streams)
        if exporter.outcomes is not None:
            yield from _outcome_families(exporter.outcomes())
        if exporter.feedback is not None:
            received = CounterMetricFamily(
                "pitstop_feedback",
                "Feedback items by what became of them: accepted (joined to a prediction), "
                "unknown (no such prediction), expired (older than the retention), rejected "
                "(malformed; the call was refused). This process's.",
                labels=["model", "result"],
            )
            for (model, result), count in sorted(exporter.feedback().items()):
                received.add_metric([model, result], count)
            yield received
        if exporter.access is not None:
            denied = CounterMetricFamily(
                "pitstop_auth_denied",
                "Calls refused by authentication, authorization or a rate limit, by action and "
                "reason (unauthenticated, forbidden, rate_limited).",
                labels=["action", "reason"],
            )
            for (action, reason), count in sorted(exporter.access().counts().items()):
                denied.add_metric([action, reason], count)
            yield denied


class MetricsExporter:
    """Renders ``/metrics``: requests, serving state, drift, cost and the process (RSS, CPU,
    open files). Call :meth:`render` on the event loop, where the recorders are updated."""

    def __init__(
        self,
        *,
        server_version: str,
        inventory: Callable[[], Inventory],
        requests: Callable[[], RequestRecorder | None] | None = None,
        drift: DriftMonitor | None = None,
        cost: Callable[[], CostReport] | None = None,
        streams: Callable[[], StreamRecorder] | None = None,
        access: Callable[[], AccessRecorder] | None = None,
        outcomes: Callable[[], Sequence[OutcomeRow]] | None = None,
        feedback: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        """``outcomes``: the latest outcome estimates (model, version, arm, estimate), read
        by the caller before :meth:`render` (they come from the registry); ``feedback``: this
        process's feedback counts by (model, result)."""
        self.outcomes = outcomes
        self.feedback = feedback
        self.server_version = server_version
        self.access = access
        self.inventory = inventory
        self.requests = requests
        self.drift = drift
        self.cost = cost
        self.streams = streams
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self))
        ProcessCollector(registry=self._registry)

    def render(self) -> bytes:
        """The Prometheus text exposition format (``CONTENT_TYPE``)."""
        return _generate(self._registry)


def _request_families(recorder: RequestRecorder) -> Iterator[Metric]:
    tvo = [*MV, "transport", "outcome"]
    duration = HistogramMetricFamily(
        "pitstop_request_duration_seconds",
        "Time from the DataPlane taking a request to its answer (or error).",
        labels=tvo,
    )
    requests = CounterMetricFamily("pitstop_requests", "Inference requests.", labels=tvo)
    errors = CounterMetricFamily(
        "pitstop_request_errors",
        "Failed requests by error type.",
        labels=[*MV, "transport", "type"],
    )
    queue = HistogramMetricFamily(
        "pitstop_queue_wait_seconds", "Time a request waited for its runtime call.", labels=MV
    )
    compute = HistogramMetricFamily(
        "pitstop_compute_seconds", "Duration of runtime calls (one per batch).", labels=MV
    )
    batch = HistogramMetricFamily("pitstop_batch_size", "Rows per runtime call.", labels=MV)
    rows = CounterMetricFamily("pitstop_predictions", "Rows answered successfully.", labels=MV)
    cache = CounterMetricFamily(
        "pitstop_cache_requests", "Response cache lookups.", labels=[*MV, "result"]
    )
    classes = CounterMetricFamily(
        "pitstop_output_class", "Predicted classes (first output).", labels=[*MV, "class"]
    )
    scores = HistogramMetricFamily(
        "pitstop_output_score", "Predicted scores (first output, one column).", labels=MV
    )
    for series in recorder:
        mv = [series.model, _version(series)]
        for (transport, outcome), histogram in sorted(series.durations.items()):
            labels = [*mv, transport, outcome]
            duration.add_metric(labels, _buckets(histogram), histogram.total)
            requests.add_metric(labels, histogram.count)
        for (transport, kind), cell in sorted(series.errors.items()):
            errors.add_metric([*mv, transport, kind], int(cell[0]))
        if series.version is None:
            continue
        if series.queue.count:
            queue.add_metric(mv, _buckets(series.queue), series.queue.total)
        if series.compute.count:
            compute.add_metric(mv, _buckets(series.compute), series.compute.total)
            batch.add_metric(mv, _buckets(series.batch_sizes), series.batch_sizes.total)
        rows.add_metric(mv, series.rows)
        if series.cache_hits or series.cache_misses:
            cache.add_metric([*mv, "hit"], series.cache_hits)
            cache.add_metric([*mv, "miss"], series.cache_misses)
        for label, count in sorted(series.outputs.classes.items()):
            classes.add_metric([*mv, label], count)
        if series.outputs.scores.count:
            histogram = series.outputs.scores
            scores.add_metric(mv, _buckets(histogram), histogram.total)
    yield from (duration, requests, errors, queue, compute, batch, rows, cache, classes, scores)


def _inventory_families(inventory: Inventory) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "pitstop_model_state", "1 for the state a version is in.", labels=[*MV, "state"]
    )
    info = InfoMetricFamily(
        "pitstop_model_version", "Content digest and runtime of each version held.", labels=MV
    )
    depth = GaugeMetricFamily("pitstop_queue_depth", "Requests waiting to run.", labels=MV)
    inflight = GaugeMetricFamily(
        "pitstop_inflight_requests", "Requests holding a version (queued or running).", labels=MV
    )
    load = GaugeMetricFamily(
        "pitstop_model_load_seconds", "Duration of the version's last successful load.", labels=MV
    )
    loaded = GaugeMetricFamily(
        "pitstop_loaded_versions", "READY versions per model.", labels=["model"]
    )
    nondeterministic = GaugeMetricFamily(
        "pitstop_model_nondeterministic",
        "1 when two warm-up runs of one example gave different outputs (no response caching).",
        labels=MV,
    )
    norm = GaugeMetricFamily(
        "pitstop_embedding_norm_mean", "Mean L2 norm of served embeddings.",
        labels=[*MV, "output"],
    )  # fmt: skip
    cosine = GaugeMetricFamily(
        "pitstop_embedding_cosine_mean",
        "Mean cosine similarity of served embeddings to the reference centroid.",
        labels=[*MV, "output"],
    )
    ready: dict[str, int] = {}
    for view in inventory.versions:
        mv = [view.model, str(view.version)]
        for name in STATES:
            state.add_metric([*mv, name], 1.0 if view.state == name else 0.0)
        info.add_metric(mv, {"digest": view.digest, "runtime": view.runtime})
        depth.add_metric(mv, view.queued)
        inflight.add_metric(mv, view.inflight)
        if view.load_seconds is not None:
            load.add_metric(mv, view.load_seconds)
        nondeterministic.add_metric(mv, 0.0 if view.deterministic else 1.0)
        ready[view.model] = ready.get(view.model, 0) + (view.state == "READY")
        for output, stats in view.behaviour.items():
            if stats.get("norm", {}).get("count"):
                norm.add_metric([*mv, output], stats["norm"]["mean"])
                cosine.add_metric([*mv, output], stats["cosine_to_centroid"]["mean"])
    for model, count in sorted(ready.items()):
        loaded.add_metric([model], count)
    weight = GaugeMetricFamily(
        "pitstop_traffic_weight_percent",
        "Share of a model's traffic each policy arm gets (rollout weights).",
        labels=["model", "target"],
    )
    for model, target, percent in inventory.weights:
        weight.add_metric([model, target], percent)
    fallbacks = CounterMetricFamily(
        "pitstop_fallbacks", "Requests answered by the policy's fallback.",
        labels=["model", "reason"],
    )  # fmt: skip
    for (model, reason), count in sorted(inventory.fallbacks.items()):
        fallbacks.add_metric([model, reason], count)
    shadow = CounterMetricFamily(
        "pitstop_shadow_requests", "Copies sent to shadow targets.", labels=["model", "target"]
    )
    shadow_failed = CounterMetricFamily(
        "pitstop_shadow_failures", "Shadow copies that failed.", labels=["model", "target"]
    )
    for (model, target), (sent, failed) in sorted(inventory.shadow_requests.items()):
        shadow.add_metric([model, target], sent)
        shadow_failed.add_metric([model, target], failed)
    dropped = CounterMetricFamily(
        "pitstop_shadow_dropped", "Shadow copies dropped because the shadow queue was full.",
        labels=["model"],
    )  # fmt: skip
    for model, count in sorted(inventory.shadow_dropped.items()):
        dropped.add_metric([model], count)
    failures = CounterMetricFamily(
        "pitstop_model_load_failures", "Versions that failed to load (after retries).",
        labels=["model"],
    )  # fmt: skip
    for model, count in sorted(inventory.load_failures.items()):
        failures.add_metric([model], count)
    registry_up = GaugeMetricFamily(
        "pitstop_registry_up", "1 when the last registry read succeeded, 0 while unreachable."
    )
    registry_up.add_metric([], 1.0 if inventory.registry_up else 0.0)
    registry_failures = CounterMetricFamily(
        "pitstop_registry_read_failures", "Registry reads that failed (outages, timeouts)."
    )
    registry_failures.add_metric([], inventory.registry_failures)
    yield from (state, info, depth, inflight, load, loaded, nondeterministic, norm, cosine, weight)
    yield from (fallbacks, shadow, shadow_failed, dropped, failures, registry_up, registry_failures)
    yield from _residency_families(inventory)


def _residency_families(inventory: Inventory) -> Iterator[Metric]:
    """Memory per version, the budget, cold starts, evictions and isolated worker restarts."""
    residency = inventory.residency
    memory = GaugeMetricFamily(
        "pitstop_version_memory_bytes",
        "Memory a READY version holds, measured at load (its worker's RSS when isolated).",
        labels=MV,
    )
    restarts = CounterMetricFamily(
        "pitstop_worker_restarts", "Restarts of a version's isolated worker process.", labels=MV
    )
    used = 0
    for view in inventory.versions:
        mv = [view.model, str(view.version)]
        if view.memory_bytes is not None:
            memory.add_metric(mv, view.memory_bytes)
            used += view.memory_bytes
        if view.worker_restarts is not None:
            restarts.add_metric(mv, view.worker_restarts)
    held = GaugeMetricFamily(
        "pitstop_memory_used_bytes", "Memory the READY versions hold together."
    )
    held.add_metric([], used)
    yield from (memory, restarts, held)
    if residency.budget is not None:
        budget = GaugeMetricFamily(
            "pitstop_memory_budget_bytes", "PITSTOP_MEMORY_BUDGET: what versions may hold."
        )
        budget.add_metric([], residency.budget)
        yield budget
    for name, text, counts in (
        ("pitstop_cold_starts", "Versions loaded because a request needed them.",
         residency.cold_starts),
        ("pitstop_evictions", "Versions unloaded to make room (least recently used).",
         residency.evictions),
        ("pitstop_cold_start_refusals",
         "On-demand loads refused: nothing could be evicted within the budget.",
         residency.refusals),
    ):  # fmt: skip
        family = CounterMetricFamily(name, text, labels=["model"])
        for model, count in sorted(counts.items()):
            family.add_metric([model], count)
        yield family
    seconds = HistogramMetricFamily(
        "pitstop_cold_start_seconds", "How long on-demand loads took.", labels=["model"]
    )
    for model, histogram in sorted(residency.cold_start_seconds.items()):
        seconds.add_metric([model], _buckets(histogram), histogram.total)
    yield seconds


def _drift_families(drift: DriftMonitor) -> Iterator[Metric]:
    mvf = [*MV, "feature"]
    psi = GaugeMetricFamily(
        "pitstop_drift_psi", "Population stability index of live inputs vs reference.", labels=mvf
    )
    ks = GaugeMetricFamily("pitstop_drift_ks", "Two-sample KS statistic vs reference.", labels=mvf)
    worst = GaugeMetricFamily("pitstop_drift_max_psi", "Highest PSI over features.", labels=MV)
    rows = GaugeMetricFamily("pitstop_drift_window_rows", "Live rows scored.", labels=MV)
    age = GaugeMetricFamily(
        "pitstop_drift_computed_timestamp_seconds", "When the scores were computed.", labels=MV
    )
    for result in drift.results():
        mv = [result.model, str(result.version)]
        for feature in result.features:
            psi.add_metric([*mv, feature.name], feature.psi)
            ks.add_metric([*mv, feature.name], feature.ks)
        worst.add_metric(mv, result.max_psi)
        rows.add_metric(mv, result.window_rows)
        age.add_metric(mv, result.computed_at)
    yield from (psi, ks, worst, rows, age)


def _outcome_families(rows: Sequence[OutcomeRow]) -> Iterator[Metric]:
    labels = ["model", "version", "arm", "metric"]
    value = GaugeMetricFamily(
        "pitstop_outcome",
        "Outcome metric from feedback joined to predictions (accuracy, error_rate, mae, rmse, "
        "mean_reward, conversion), per version and traffic-policy arm.",
        labels=labels,
    )
    low = GaugeMetricFamily(
        "pitstop_outcome_low",
        "Lower bound of the outcome's 95% confidence interval.",
        labels=labels,
    )
    high = GaugeMetricFamily(
        "pitstop_outcome_high",
        "Upper bound of the outcome's 95% confidence interval.",
        labels=labels,
    )
    count = GaugeMetricFamily(
        "pitstop_outcome_observations", "Feedback items behind the outcome.", labels=labels
    )
    for model, version, arm, estimate in rows:
        key = [model, str(version), arm, estimate.metric.value]
        count.add_metric(key, estimate.n)
        for family, number in ((value, estimate.value), (low, estimate.low), (high, estimate.high)):
            if number == number:  # NaN: unknown, not exported
                family.add_metric(key, number)
    yield from (value, low, high, count)


def _cost_families(report: CostReport) -> Iterator[Metric]:
    per_hour = GaugeMetricFamily("pitstop_cost_per_hour", "What this replica costs per hour.")
    per_hour.add_metric([], report.cost_per_hour)
    per_1k = GaugeMetricFamily(
        "pitstop_cost_per_1k_predictions",
        "Cost of 1000 predictions over the cost window (compute-time share of the replica).",
        labels=MV,
    )
    for row in report.rows:
        if row.cost_per_1k is not None:
            per_1k.add_metric([row.model, str(row.version)], row.cost_per_1k)
    yield from (per_hour, per_1k)


def _stream_families(recorder: StreamRecorder) -> Iterator[Metric]:
    sm = ["stream", "model"]
    messages = CounterMetricFamily(
        "pitstop_stream_messages",
        "Stream messages by outcome: consumed (deliveries fetched), answered, dead_lettered, "
        "redelivered, retried, publish_failed.",
        labels=[*sm, "outcome"],
    )
    processing = HistogramMetricFamily(
        "pitstop_stream_processing_seconds",
        "From a delivery's fetch to its acknowledgement.", labels=sm,
    )  # fmt: skip
    age = HistogramMetricFamily(
        "pitstop_stream_age_seconds",
        "From the broker storing a message to its acknowledgement (end to end).", labels=sm,
    )  # fmt: skip
    batch = HistogramMetricFamily(
        "pitstop_stream_batch_size", "Messages per fetched batch.", labels=sm
    )
    pending = GaugeMetricFamily(
        "pitstop_stream_pending",
        "Messages of the source no consumer of the group has received yet (the lag).",
        labels=sm,
    )
    unacked = GaugeMetricFamily(
        "pitstop_stream_unacked", "Messages delivered and not acknowledged yet.", labels=sm
    )
    for series in recorder:
        labels = [series.stream, series.model]
        for outcome, count in series.counts().items():
            messages.add_metric([*labels, outcome.value], count)
        processing.add_metric(labels, _buckets(series.processing), series.processing.total)
        age.add_metric(labels, _buckets(series.age), series.age.total)
        batch.add_metric(labels, _buckets(series.batch), series.batch.total)
        if series.pending is not None and series.unacked is not None:
            pending.add_metric(labels, series.pending)
            unacked.add_metric(labels, series.unacked)
    yield from (messages, processing, age, batch, pending, unacked)
