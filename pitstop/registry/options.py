"""The serving options a manifest stores, as typed values parsed once when a manifest is pushed
(and again when a stored one is read back), never on each load or request.

``batching`` uses Triton's ``dynamic_batching`` names (and MLServer's ``max_batch_time`` in
seconds); ``cache`` is ``{enabled, max_entries, max_bytes, ttl_s}``; ``swap`` names how a new
version replaces the old. Errors are InvalidInput naming the field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

from pitstop.byte_size import parse_byte_size
from pitstop.errors import InvalidInput

DEFAULT_MAX_QUEUE_SIZE: Final = 1024


class SwapPolicy(enum.StrEnum):
    """How a new version replaces the old (the policy of the version an alias moves *to*
    decides)."""

    AVAILABILITY = "availability-preserving"
    """Load the new version next to the old, switch, drain, unload (the default)."""
    RESOURCES = "resource-preserving"
    """Unload the old first: brief 503s, for models too big to hold twice."""

    @classmethod
    def parse(cls, value: object) -> SwapPolicy:
        if value is None:
            return cls.AVAILABILITY
        try:
            return cls(str(value)) if isinstance(value, str) else cls("")
        except ValueError:
            names = [policy.value for policy in cls]
            raise InvalidInput(f"swap: expected one of {names}, got {value!r}") from None


@dataclass(frozen=True)
class BatchingOptions:
    """The manifest's ``batching`` section (Triton's ``dynamic_batching`` names)."""

    max_batch_size: int
    max_queue_delay_microseconds: int = 0
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    default_timeout_microseconds: int = 0
    priority_levels: int = 1
    default_priority_level: int = 1
    instances: int = 1
    """Batches that may run at once (Triton's instance count)."""

    @classmethod
    def parse(cls, section: Mapping[str, Any] | None) -> BatchingOptions | None:
        """Parse and validate; ``None`` (or ``max_batch_size`` 0) means no batching."""
        if not section:
            return None
        known = set(cls.__dataclass_fields__) | {"max_batch_time"}
        for key in section:
            if key not in known:
                raise InvalidInput(f"batching.{key}: unknown setting; known: {sorted(known)}")
        values = {k: v for k, v in section.items() if k != "max_batch_time"}
        if "max_batch_time" in section and "max_queue_delay_microseconds" not in section:
            seconds = section["max_batch_time"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise InvalidInput(
                    f"batching.max_batch_time: expected seconds >= 0, got {seconds!r}"
                )
            values["max_queue_delay_microseconds"] = round(float(seconds) * 1e6)
        preferred = values.pop("preferred_batch_size", ())
        if isinstance(preferred, int):
            preferred = (preferred,)
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"batching.{key}: expected an integer >= 0, got {value!r}")
        if not isinstance(preferred, list | tuple) or not all(
            isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in preferred
        ):
            raise InvalidInput("batching.preferred_batch_size: expected positive integers")
        if "max_batch_size" not in values:
            raise InvalidInput("batching.max_batch_size: required (0 turns batching off)")
        options = cls(preferred_batch_size=tuple(sorted(preferred)), **values)
        if options.max_batch_size == 0:
            return None
        if any(p > options.max_batch_size for p in options.preferred_batch_size):
            raise InvalidInput("batching.preferred_batch_size: larger than max_batch_size")
        if options.max_queue_size == 0:
            raise InvalidInput("batching.max_queue_size: must be > 0 (queues are bounded)")
        if options.priority_levels < 1 or options.instances < 1:
            raise InvalidInput("batching.priority_levels and instances must be >= 1")
        if not 1 <= options.default_priority_level <= options.priority_levels:
            raise InvalidInput("batching.default_priority_level: must be in 1..priority_levels")
        return options

    def to_json(self) -> dict[str, Any]:
        """Triton's names; :meth:`parse` reads it back."""
        body = asdict(self)
        body["preferred_batch_size"] = list(self.preferred_batch_size)
        return body


@dataclass(frozen=True)
class CacheOptions:
    """The manifest's ``cache`` section: ``{enabled: true, max_entries, max_bytes, ttl_s}``."""

    max_entries: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    ttl_s: float = 300.0

    @classmethod
    def parse(cls, section: Mapping[str, Any] | None) -> CacheOptions | None:
        """``None`` unless the section says ``enabled: true``."""
        if not section:
            return None
        known = {"enabled", "max_entries", "max_bytes", "ttl_s"}
        for key, value in section.items():
            if key not in known:
                raise InvalidInput(f"cache.{key}: unknown setting; known: {sorted(known)}")
            if key == "enabled":
                if not isinstance(value, bool):
                    raise InvalidInput(f"cache.enabled: expected true or false, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidInput(f"cache.{key}: expected a positive number, got {value!r}")
        if not section.get("enabled", False):
            return None
        return cls(
            max_entries=int(section.get("max_entries", cls.max_entries)),
            max_bytes=int(section.get("max_bytes", cls.max_bytes)),
            ttl_s=float(section.get("ttl_s", cls.ttl_s)),
        )

    def to_json(self) -> dict[str, Any]:
        return {"enabled": True, **asdict(self)}


ISOLATION_MODES: Final = ("process", "none")
DEFAULT_CALL_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class IsolationOptions:
    """Where the runtime runs: ``process`` (a worker subprocess of its own: a crash, hang or
    runaway allocation fails only this version's requests, and the worker is restarted) or
    ``none`` (the server process). Written ``isolation: process`` or as a mapping with
    ``memory_limit`` (``1GiB``: the worker's address space), ``timeout_s`` (longest one call
    may take before the worker is replaced; 30) and ``python`` (an interpreter, e.g. a
    per-model virtualenv's ``bin/python``, in which pitstop must be importable)."""

    mode: str = "process"
    memory_limit: int | None = None
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    python: str | None = None

    @property
    def process(self) -> bool:
        return self.mode == "process"

    @classmethod
    def parse(cls, value: object) -> IsolationOptions | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = {"mode": value}
        if not isinstance(value, Mapping):
            raise InvalidInput("isolation: 'process', 'none' or a mapping with mode")
        unknown = sorted(set(value) - {"mode", "memory_limit", "timeout_s", "python"})
        if unknown:
            raise InvalidInput(f"isolation.{unknown[0]}: unknown setting")
        mode = value.get("mode", "process")
        if mode not in ISOLATION_MODES:
            raise InvalidInput(f"isolation.mode: one of {list(ISOLATION_MODES)}, got {mode!r}")
        limit = value.get("memory_limit")
        timeout = value.get("timeout_s", DEFAULT_CALL_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidInput(
                f"isolation.timeout_s: a positive number of seconds, got {timeout!r}"
            )
        python = value.get("python")
        if python is not None and (not isinstance(python, str) or not python.startswith("/")):
            raise InvalidInput("isolation.python: an absolute path to an interpreter")
        return cls(
            mode=str(mode),
            memory_limit=None
            if limit is None
            else parse_byte_size(limit, "isolation.memory_limit"),
            timeout_s=float(timeout),
            python=python,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
