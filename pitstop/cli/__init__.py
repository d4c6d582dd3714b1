"""The ``pitstop`` command line: serve, and manage the registry (models, versions, aliases,
traffic, rollouts, status, history). Management commands talk to the registry directly
(``PITSTOP_HOME`` or ``PITSTOP_REGISTRY_URL``); a running server notices their changes within a
second.

- :mod:`pitstop.cli.context`: the shared context object and output helpers
- :mod:`pitstop.cli.catalog`: serve, models, versions, alias, token, status, history
- :mod:`pitstop.cli.delivery`: deploy, rollout, rollback, ab, shadow, fallback, traffic
- :mod:`pitstop.cli.embeddings`: import sentence-transformers, optimize
"""

from pitstop.cli.main import cli, main

__all__ = ["cli", "main"]
