"""Every setting of pitstop, read once from the environment (``PITSTOP_*``) by a composition root.

Nothing reads the environment anywhere else; the values are passed down as plain arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pitstop.byte_size import parse_byte_size
from pitstop.errors import InvalidInput

ANSWER_FIELDS = frozenset({"message_id", "model_name", "model_version", "model_digest", "outputs"})
"""The keys of a stream's answer to a record that are pitstop's (pitstop.stream.message): no
kept field may take one of these names."""


class StreamSettings(BaseModel):
    """One stream a server (or ``pitstop stream``) consumes: messages from ``from``, answers to
    ``to``, failures to ``dead_letter`` (docs/streaming.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    model: str = Field(min_length=1, max_length=200)
    """The model that scores the messages."""

    source: str = Field(alias="from", min_length=1)
    """``nats://HOST:PORT/SUBJECT`` (a JetStream stream must store the subject) or
    ``redis://HOST:PORT/STREAM`` (``?db=N``)."""

    to: str = Field(min_length=1)
    """Where answers go, on the same server: a subject some JetStream stream stores, or a Redis
    stream."""

    dead_letter: str | None = None
    """Where failed messages go (the original payload, the error, the delivery count). Default:
    the ``to`` subject or stream with ``.dead`` appended."""

    version: str | None = None
    """A version number or an alias to pin; default: the model's traffic policy (production,
    canary, A/B), as an HTTP request without a version."""

    group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,200}$")
    """The durable consumer (NATS) or consumer group (Redis) every consumer of this stream
    shares: letters, digits, ``_`` and ``-``. Default: ``pitstop-<model>`` (other characters of
    the model name as ``-``)."""

    format: Literal["auto", "v2", "record"] = "auto"
    """``v2``: a V2 inference request per message; ``record``: one flat JSON object per message,
    one row, mapped to the inputs as ``pitstop batch`` maps columns; ``auto``: V2 when the
    message has an ``inputs`` list."""

    columns: dict[str, list[str]] = Field(default_factory=dict)
    """Records: ``{INPUT: [FIELD, ...]}`` where the names differ."""

    keep: list[str] = Field(default_factory=list)
    """Records: fields copied to the answer (keys, timestamps); not ``message_id``,
    ``model_name``, ``model_version``, ``model_digest`` or ``outputs`` (the answer's own)."""

    @field_validator("keep")
    @classmethod
    def _keep_is_not_the_answers(cls, keep: list[str]) -> list[str]:
        taken = sorted(set(keep) & ANSWER_FIELDS)
        if taken:
            raise ValueError(f"{taken[0]!r} is a field of the answer itself; keep another name")
        return keep

    batch_size: int = Field(default=64, ge=1, le=4096)
    """Most messages scored in one model call."""

    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    """Longest a batch waits to fill once its first message arrived."""

    in_flight: int = Field(default=4, ge=1, le=256)
    """Batches being scored or published at once; fetching stops while all are busy."""

    max_deliver: int = Field(default=5, ge=1, le=1000)
    """Deliveries a message gets before a runtime error dead-letters it."""

    ack_wait_s: float = Field(default=30.0, gt=0, le=3600)
    """A message not acknowledged this long after delivery goes to another consumer."""

    backoff_s: float = Field(default=1.0, ge=0, le=3600)
    """Delay before the first retry of a message whose model call failed; doubles per delivery
    up to ``backoff_max_s``."""

    backoff_max_s: float = Field(default=60.0, ge=0, le=3600)

    max_message_bytes: int = Field(default=1024 * 1024, gt=0, le=64 * 1024 * 1024)
    """Larger messages are dead-lettered unread."""

    lag_interval_s: float = Field(default=5.0, gt=0)
    """How often the broker is asked for the consumer's lag (``pitstop_stream_pending``)."""


class Settings(BaseSettings):
    """Server, registry and CLI configuration. Each field is also ``PITSTOP_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="PITSTOP_", extra="ignore")

    home: Path = Field(default=Path(".pitstop"))
    """Folder for the embedded registry (SQLite file) and the local artifact store."""

    registry_url: str | None = None
    """SQLAlchemy URL of the registry, e.g. ``postgresql+psycopg://user@host/db``.
    Default: ``sqlite:///<home>/registry.db``."""

    artifact_root: Path | None = None
    """Folder of the local content-addressed artifact store. Default: ``<home>/artifacts``."""

    artifacts_url: str | None = None
    """Where artifacts live: ``file:///<folder>`` or ``s3://<bucket>[/<prefix>]`` (S3 or an
    S3-compatible store; endpoint, region and credentials from the standard ``AWS_*``
    variables and the SDK's credential chain). Default: the local store (``artifact_root``)."""

    cache_dir: Path | None = None
    """This host's cache of a remote store's artifacts. Default: ``<home>/cache``."""

    cache_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    """Bound on that cache; least recently used artifacts nobody serves are removed first."""

    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """How bucket names appear in S3 URLs; many S3-compatible servers want ``path``."""

    host: str = "127.0.0.1"
    """Address the server binds. Only loopback unless told otherwise."""

    http_port: int = Field(default=8000, ge=0, le=65535)
    """REST (Open Inference Protocol) port."""

    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port (``inference.GRPCInferenceService``), on the same ``host``."""

    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest gRPC message received or sent; larger ones fail with RESOURCE_EXHAUSTED."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger bodies get 413. A compressed body
    (``Content-Encoding: gzip`` or ``deflate``) is held to it both as sent and decompressed."""

    compress_responses: bool = True
    """Compress HTTP responses of at least ``compress_min_bytes`` when the client's
    ``Accept-Encoding`` accepts gzip or deflate (compressed requests are always read)."""

    compress_min_bytes: int = Field(default=1024, ge=0)
    """The smallest HTTP response body worth compressing."""

    server_name: str = Field(default="pitstop", min_length=1, max_length=64)
    """The name server metadata reports (``GET /v2``, ``ServerMetadata``): ``triton`` for
    clients that check they talk to Triton (its example clients do)."""

    console: bool = True
    """Serve the web console at ``/console`` (static pages; every number it shows comes from
    the JSON APIs with the caller's token). False: ``/console`` answers 404."""

    system_shared_memory: bool = True
    """Serve the system shared-memory extension: clients on this host register POSIX
    shared-memory objects owned by the server's user and pass tensors through them. False
    refuses the extension's calls and requests that refer to a region (501)."""

    grpc_typed_outputs: bool = False
    """gRPC inference responses carry their tensors in ``raw_output_contents``, as Triton's do;
    true answers a request sent with typed contents with typed contents (what pitstop did before).
    A request can ask for typed outputs itself with the parameter ``typed_output_contents``."""

    default_model: str | None = None
    """The model MLflow's root route ``POST /invocations`` serves (``pitstop serve FOLDER``
    sets it to the folder's model). Unset: that route answers 404 naming this setting."""

    decode_memory_bytes: int = Field(default=2 * 1024**3, gt=0)
    """Memory the codec worker process may use to parse one large JSON body or typed gRPC message
    (address space beyond what it maps at start). Parsing builds up to ~35 bytes of objects per
    byte of pathological input; a request that needs more is refused with 413 /
    RESOURCE_EXHAUSTED. Large bodies of those kinds are parsed there, never in the server, so
    they cannot hold other requests up."""

    watch_interval_s: float = Field(default=0.5, gt=0)
    """How often the server checks the registry for alias changes."""

    warmup_runs: int = Field(default=2, ge=0)
    """How many times a version runs its manifest's example before it takes traffic."""

    load_timeout_s: float = Field(default=120.0, gt=0)
    """Longest a version may take to verify, load and warm up before it is marked FAILED."""

    load_retries: int = Field(default=2, ge=0)
    """Extra attempts after a transient load failure (a timeout or an unexpected error)."""

    load_retry_backoff_s: float = Field(default=1.0, ge=0)
    """Wait before the first retry; doubles for each further one."""

    drain_timeout_s: float = Field(default=30.0, ge=0)
    """Longest an old version waits for in-flight requests before it is unloaded anyway."""

    memory_budget: str | None = None
    """Memory every loaded version may hold together (``4GiB``, ``512MiB``, bytes): before a
    load that would exceed it, on-demand versions are evicted least recently used first; when
    nothing can be evicted, the load is refused with 503. Unset: no budget."""

    load_policy: Literal["always", "on-demand"] = "always"
    """Models without a ``load`` setting in their traffic policy: ``always`` loads every
    aliased version at start and keeps it; ``on-demand`` loads a version at the first request
    that needs it and keeps it until memory is needed."""

    on_demand_max: int = Field(default=64, ge=1)
    """How many versions loaded on demand may be resident at once (with or without a budget):
    the least recently used is evicted beyond it."""

    cold_start_queue: int = Field(default=256, ge=1)
    """Requests that may wait for one version to load on demand; more get 429."""

    @field_validator("memory_budget")
    @classmethod
    def _a_size(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            try:
                parse_byte_size(value, "PITSTOP_MEMORY_BUDGET")
            except InvalidInput as exc:
                raise ValueError(str(exc)) from None
            return value
        return None

    @property
    def memory_budget_bytes(self) -> int | None:
        """:attr:`memory_budget` in bytes."""
        if self.memory_budget is None:
            return None
        return parse_byte_size(self.memory_budget, "PITSTOP_MEMORY_BUDGET")

    inference_threads: int = Field(default=4, ge=1)
    """Threads that run framework calls, so the event loop never blocks on a model."""

    max_queue_size: int = Field(default=1024, gt=0)
    """Requests that may wait per version without a batcher; more get 429 (a batcher's bound is
    ``batching.max_queue_size`` in the manifest)."""

    default_timeout_us: int = Field(default=0, ge=0)
    """Deadline for requests that set no ``timeout`` parameter, in microseconds; 0 = none. A
    request whose deadline passes before it runs is never executed and gets 504."""

    runtime_threads: int = Field(default=1, ge=1)
    """Threads one framework call may use (onnxruntime intra-op, xgboost nthread, ...)."""

    shutdown_grace_s: float = Field(default=5.0, ge=0)
    """After SIGTERM: seconds during which readiness is false but new connections are still
    served, so load balancers stop sending traffic before the server stops listening."""

    rollout_controller: bool = True
    """Run the rollout controller in this server (only the replica holding the registry lease
    acts)."""

    rollout_steps: str = "5,25,50,100"
    """Default canary weights of ``pitstop deploy``, in percent."""

    rollout_interval: str = "60s"
    """Default time per rollout step of ``pitstop deploy`` (s, m, h, d suffixes)."""

    rollout_tick_s: float = Field(default=0.5, gt=0)
    """How often the rollout controller judges active rollouts."""

    rollout_publish_s: float = Field(default=1.0, gt=0)
    """How often each server publishes what it observed of running rollouts, for the
    controller to judge every replica's traffic."""

    predictions: Literal["auto", "memory", "registry", "off"] = "auto"
    """Where recent predictions are kept for joining feedback (docs/experiments.md):
    ``memory`` (this process only), ``registry`` (every worker and replica can join feedback to
    any of them; written in batches), ``off`` (feedback is refused). ``auto``: memory for one
    server process, registry with ``--workers`` above 1."""

    predictions_capacity: int = Field(default=100_000, ge=1, le=10_000_000)
    """Predictions kept in memory (about 300 bytes each), and waiting to be written to the
    registry at most."""

    predictions_ttl_s: float = Field(default=86_400.0, gt=0)
    """How long (seconds) a prediction can receive feedback; older registry rows are
    pruned."""

    bandit_controller: bool = True
    """Run the bandit controller in this server (only the replica holding the registry lease
    moves weights)."""

    actor: str | None = None
    """Name recorded in the audit history for CLI changes. Default: the OS user."""

    replica: str | None = None
    """Name under which this server reports load states. Default: ``<hostname>:<http_port>``."""

    admin_token: SecretStr | None = Field(default=None, min_length=32)
    """An admin token secret kept outside pitstop (a Kubernetes Secret): servers register its
    digest at start as the token ``admin-env`` (replacing one from an earlier secret), so the
    operator holds a working admin token without reading a pod's files."""

    storage_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("PITSTOP_STORAGE_URI", "STORAGE_URI")
    )
    """``pitstop serve`` with no ``--model-dir``: a model folder to download and serve as
    ``--model-dir`` does: ``s3://bucket/prefix`` or a local path. Also read from KServe's
    ``STORAGE_URI``."""

    workers: int = Field(default=1, ge=1, le=64)
    """Server processes on this host sharing the HTTP and gRPC ports (``pitstop serve
    --workers``): each is a replica of the registry; a supervisor restarts any that dies."""

    worker_dir: Path | None = None
    """Set by that supervisor for its workers: the folder where each keeps its request counters
    (memory-mapped), summed by whichever worker answers ``/metrics`` or statistics."""

    rate_share: float = Field(default=1.0, gt=0, le=1)
    """Set by that supervisor for its workers: the share of every rate limit (the server's
    and each token's) one worker enforces, ``1/workers``, so that together they allow the
    configured rates. Not for users to set."""

    heartbeat_s: float = Field(default=3.0, gt=0)
    """How often a server records its heartbeat and applied generation in the registry."""

    replica_timeout_s: float = Field(default=15.0, gt=0)
    """A replica whose heartbeat is older than this is not live (``pitstop status``)."""

    streams: list[StreamSettings] = Field(default_factory=list)
    """Streams the server consumes beside HTTP and gRPC (same Engine, same metrics), as JSON:
    ``PITSTOP_STREAMS='[{"model": "fraud", "from": "nats://127.0.0.1:4222/tx", "to":
    "nats://127.0.0.1:4222/scores"}]'``. Each worker of ``--workers`` consumes them too (one
    group: messages are shared, never duplicated)."""

    # -- security (docs/security.md) -------------------------------------------------------------

    tls_cert: Path | None = None
    """PEM certificate chain served on the HTTP and gRPC ports (with ``tls_key``): TLS on both.
    Re-read when the file changes: a rotated certificate is served without a restart."""

    tls_key: Path | None = None
    """PEM private key of ``tls_cert`` (unencrypted; mode 0600)."""

    tls_client_ca: Path | None = None
    """PEM certificates of the CAs whose client certificates are accepted: mutual TLS. A client
    without a certificate signed by one of them is refused during the handshake."""

    tls_client_scopes: dict[str, list[str]] = Field(default_factory=dict)
    """Scopes a verified client certificate grants without a token, by its subject's common
    name (``"*"``: any verified certificate), e.g. ``{"billing": ["infer:fraud*"]}``. A bearer
    token, when one is sent too, decides instead."""

    inference_auth: Literal["auto", "on", "off"] = "auto"
    """Whether inference and metadata calls need credentials (a token with the ``infer`` or
    ``read`` scope, or a mapped client certificate): ``auto`` = on unless ``host`` is a
    loopback address. Management calls always need an ``admin`` or ``read`` token."""

    insecure: bool = False
    """Allow a non-loopback ``host`` with neither TLS nor inference authentication (refused
    otherwise). Logged at start and reported in ``GET /v2``."""

    rate_limit: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Requests per second each token (or certificate) may make, unless its own limit says
    otherwise; 0 = unlimited. Over it: 429 with ``Retry-After``."""

    rate_burst: int = Field(default=0, ge=0)
    """Requests a token may make at once above its rate (the bucket's size); 0 = one second's
    worth of its rate."""

    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    """Largest request head (request line and headers) over HTTP, and largest gRPC metadata;
    larger ones are refused (431 / RESOURCE_EXHAUSTED)."""

    require_signature: bool = False
    """Load only versions whose digest carries a valid signature by one of ``trusted_keys``;
    others fail to load with the reason (whatever served keeps serving)."""

    trusted_keys: list[Path] = Field(default_factory=list)
    """Ed25519 public keys (PEM files, or folders of ``*.pub`` files) whose signatures are
    trusted, as JSON: ``PITSTOP_TRUSTED_KEYS='["/etc/pitstop/keys"]'``."""

    # -- observability (docs/observability.md) ---------------------------------------------------

    metrics_enabled: bool = True
    """Record request metrics and serve them at ``GET /metrics`` (Prometheus text format)."""

    drift_enabled: bool = True
    """Keep a window of live inputs per version and score it against the reference profile."""

    drift_interval_s: float = Field(default=30.0, gt=0)
    """How often live windows are compared with their reference profiles."""

    drift_window_rows: int = Field(default=2048, ge=64)
    """Live input rows kept per version (a ring: the newest replace the oldest)."""

    drift_min_rows: int = Field(default=200, ge=1)
    """Rows a live window needs before it is scored."""

    drift_reference_rows: int = Field(default=1000, ge=0)
    """Without a pushed reference, the first N rows a version serves become its reference profile
    (stored in the registry); 0 = only pushed references."""

    drift_psi_threshold: float = Field(default=0.25, gt=0)
    """PSI from which a feature is reported as drifted (a rule of thumb: 0.1 moderate, 0.25
    large). The shipped alert rules use the same figure."""

    tracing_exporter: str = Field(default="none", pattern="^(none|console|otlp)$")
    """OpenTelemetry spans: ``none`` (off, no cost), ``console`` (stdout) or ``otlp`` (gRPC)."""

    tracing_endpoint: str | None = None
    """OTLP collector address, e.g. ``http://127.0.0.1:4317``; default: the exporter's own."""

    tracing_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces recorded; requests with a sampled ``traceparent`` always are."""

    log_format: str = Field(default="text", pattern="^(text|json)$")
    """``json``: one JSON object per line (for log collectors); ``text``: for people."""

    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    """Lowest level logged."""

    log_requests: bool = False
    """Log one line per inference request (request id, model, version, status, latency)."""

    log_payload_sample_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of logged requests whose inputs and outputs are logged too (truncated)."""

    log_redact: list[str] = Field(default_factory=list)
    """Tensor and parameter names whose values never reach the logs (PII), e.g.
    ``PITSTOP_LOG_REDACT='["email","ssn"]'``."""

    cost_per_hour: float = Field(default=0.0, ge=0)
    """What one replica costs per hour (any currency); 0 = no cost metrics."""

    replicas: int = Field(default=1, ge=1)
    """Replicas sharing the traffic; the cost report scales one replica's figures by it."""

    cost_window_s: float = Field(default=3600.0, gt=0)
    """Window of ``pitstop_cost_per_1k_predictions`` (the ``pitstop cost`` default too)."""

    def resolved_registry_url(self) -> str:
        if self.registry_url:
            return self.registry_url
        return f"sqlite:///{(self.home / 'registry.db').resolve()}"

    def resolved_artifact_root(self) -> Path:
        return (self.artifact_root or self.home / "artifacts").resolve()

    def resolved_cache_dir(self) -> Path:
        return (self.cache_dir or self.home / "cache").resolve()
