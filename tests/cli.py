"""The ``pitstop`` CLI run in this process, as ``pitstop.cli.main.main`` runs it (a PitstopError
is one ``error: ...`` line on stderr and exit code 1): several times faster than a subprocess
per command, for tests that run many commands."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from pitstop.cli.main import cli
from pitstop.errors import PitstopError


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run_cli(env: Mapping[str, str], *args: str) -> Completed:
    """``pitstop ARGS`` with ``env`` added to the environment while it runs."""
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "300", **env})
    error = result.exception
    if error is None or isinstance(error, SystemExit):
        return Completed(result.exit_code, result.stdout, result.stderr)
    if isinstance(error, PitstopError | OSError):
        return Completed(1, result.stdout, f"{result.stderr}error: {error}\n")
    raise error


def run_process(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pitstop ARGS`` in its own process against ``home``, as an operator would run it: for
    tests whose server must notice the change (a new token is usable once the server's cache
    follows the registry, which a process start always outlasts)."""
    return subprocess.run(
        [sys.executable, "-m", "pitstop", *args],
        env={"PITSTOP_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
