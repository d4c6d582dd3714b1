"""The headless core every entry point hosts: :class:`Engine`."""

from pitstop.engine.engine import EXTENSIONS, Engine, replica_name
from pitstop.engine.monitors import Observability

__all__ = ["EXTENSIONS", "Engine", "Observability", "replica_name"]
