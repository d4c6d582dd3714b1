"""The registry's answers: frozen records that carry no database state.

Everything :class:`pitstop.registry.catalog.Registry` returns is one of these (or
:class:`pitstop.registry.audit.AuditEvent`); SQLAlchemy objects never leave the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pitstop.registry.digest import FileEntry
from pitstop.registry.manifest import ModelManifest
from pitstop.registry.policy import TrafficPolicy


@dataclass(frozen=True)
class VersionRecord:
    """One immutable version of a model: its content digest, files and manifest."""

    model: str
    number: int
    """1, 2, 3, ... in push order within the model; never reused."""
    digest: str
    """``sha256:<hex>`` over the files (see :mod:`pitstop.registry.digest`)."""
    runtime: str
    manifest: ModelManifest
    files: tuple[FileEntry, ...]
    """Sorted by path."""
    size_bytes: int
    meta: dict[str, str]
    """Free-form provenance given at push time (run id, dataset hash, metrics, ...)."""
    trust_pickle: bool
    """The pusher vouched for pickle files in this version; runtimes refuse pickle otherwise."""
    trust_code: bool
    """The pusher vouched for Python code in this version; the python runtime needs it."""
    created_at: datetime
    """UTC, tz-aware."""
    created_by: str

    @property
    def label(self) -> str:
        """``"<model> v<number>"``, how messages name this version."""
        return f"{self.model} v{self.number}"


@dataclass(frozen=True)
class PushResult:
    """The version a push resolved to; ``created`` is false when the content already existed."""

    version: VersionRecord
    created: bool


@dataclass(frozen=True)
class ModelRecord:
    """A model as listed: its latest version number (``None`` before the first version), its
    aliases (name → version number) and how many versions it has."""

    name: str
    created_at: datetime
    latest_version: int | None
    aliases: dict[str, int]
    version_count: int


@dataclass(frozen=True)
class TokenRecord:
    """A bearer token as the registry keeps it: never its secret."""

    name: str
    sha256: str
    """Hex sha256 of the secret."""
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    """After this instant the token is refused; None: never."""
    rate_limit: float | None = None
    """Requests per second it may make; None: the server's default (``PITSTOP_RATE_LIMIT``)."""
    burst: int | None = None
    """Requests above the rate it may make at once; None: the server's default."""


@dataclass(frozen=True)
class RegistrySnapshot:
    """A consistent view of the catalog at one :meth:`~Registry.generation`: what to serve."""

    generation: int
    models: dict[str, dict[str, VersionRecord]]
    """Model name → alias name → the version the alias points at. Every model is present,
    with an empty mapping when it has no aliases."""
    latest: dict[str, VersionRecord] = field(default_factory=dict)
    """Model name → its newest version (absent for a model without versions)."""
    policies: dict[str, TrafficPolicy] = field(default_factory=dict)
    """Model name → its traffic policy, for models that have one (others: the default)."""
    pinned: dict[str, dict[int, VersionRecord]] = field(default_factory=dict)
    """Model name → versions its policy names by number (canaries, shadows, fallbacks)."""
    tokens: tuple[TokenRecord, ...] = ()
    """Every bearer token: what servers accept."""
    numbers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Model name → every version number it has, ascending: what a server can load on
    demand."""
