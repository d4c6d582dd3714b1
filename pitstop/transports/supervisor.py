"""``pitstop serve --workers N``: N server processes on one host sharing the HTTP and gRPC ports.

One Python process is the throughput ceiling of a server (the GIL); N workers, each a whole
server with its own Engine, multiply it. The supervisor serves nothing itself. It

- holds both ports (a bound socket that does not listen, so a port in use is one clear error
  before any worker starts, and ``0`` resolves to one port every worker shares);
- starts each worker as ``python -m pitstop serve`` with the same settings, ``PITSTOP_WORKERS=1``
  and a ``PITSTOP_WORKER_DIR`` it made; each worker listens on both ports with SO_REUSEPORT and
  the kernel spreads new connections over the listening workers (a dead worker's share goes to
  the others at once);
- restarts a worker that exits (at once; with back-off when it keeps failing within
  :data:`FAST_EXIT_S` of its start; five such failures in a row stop the server, exit code 1);
- on SIGTERM forwards it to every worker (each drains as a single server does: not ready, grace,
  finish in-flight requests) and exits once all have, SIGKILLing any still running past
  ``shutdown_grace_s + drain_timeout_s`` plus a margin; SIGINT is forwarded the same way.

Every worker is a replica of the registry (``<replica>/<index>``: a restarted worker keeps its
name) and keeps its request counters in the worker folder (:mod:`pitstop.monitoring.tally`), so
``/metrics`` and the statistics endpoint answer the sum over all workers whichever one is asked,
a killed worker's counts included. A worker whose supervisor dies gets SIGTERM (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

import orjson
from pydantic import SecretStr

from pitstop.monitoring.tally import retire
from pitstop.settings import Settings
from pitstop.transports.listener import shared_socket

log = logging.getLogger(__name__)

TICK_S: Final = 0.1
"""How often the supervisor looks at its workers."""
FAST_EXIT_S: Final = 10.0
"""A worker that exits sooner than this after its start failed at start."""
MAX_FAST_EXITS: Final = 5
"""Failures in a row at start after which the supervisor gives up."""
MAX_BACKOFF_S: Final = 30.0
STOP_MARGIN_S: Final = 15.0
"""Beyond a worker's own grace and drain timeout, how long it may take to exit on SIGTERM."""
SUPERVISOR_PID: Final = "supervisor.pid"
"""In the worker folder: who started the workers (a worker checks its parent is still it)."""
PR_SET_PDEATHSIG: Final = 1


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    fast_exits: int = 0
    start_at: float = 0.0
    """When to (re)start it; 0 = now."""


class Supervisor:
    """Runs ``settings.workers`` workers until SIGTERM or SIGINT; :meth:`run` returns the exit
    code. ``command`` starts one worker (default: this Python, ``-m pitstop serve``)."""

    def __init__(self, settings: Settings, command: Sequence[str] | None = None) -> None:
        self._settings = settings
        self._command = list(command or [sys.executable, "-m", "pitstop", "serve"])
        self._workers = [Worker(index) for index in range(settings.workers)]
        self._stopping: int | None = None
        """The signal being forwarded once a stop was asked for."""
        self._signals: list[int] = []
        """Signals received and not yet acted on (the handler only appends: see _on_signal)."""
        self._deadline = 0.0
        self._failed = False
        self._folder = Path()

    def run(self) -> int:
        settings = self._settings
        try:
            holds = [
                shared_socket(settings.host, port, listen=False)
                for port in (settings.http_port, settings.grpc_port)
            ]
        except OSError as exc:
            log.error("cannot listen on %s: %s", settings.host, exc)
            return 1
        folder = self._folder = Path(
            tempfile.mkdtemp(prefix="pitstop-workers-", dir=_memory_folder())
        )
        try:
            (folder / SUPERVISOR_PID).write_text(str(os.getpid()))
            http_port, grpc_port = (sock.getsockname()[1] for sock in holds)
            environment = worker_environment(settings, folder, http_port, grpc_port)
            log.info(
                "supervising %d workers on %s (HTTP %d, gRPC %d)",
                settings.workers, settings.host, http_port, grpc_port,
            )  # fmt: skip
            previous = {
                sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
            }
            try:
                self._supervise(environment)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                self._kill_all()
        finally:
            for sock in holds:
                sock.close()
            shutil.rmtree(folder, ignore_errors=True)
        return 1 if self._failed else 0

    # -- the loop ------------------------------------------------------------------------------

    def _supervise(self, environment: dict[str, str]) -> None:
        while True:
            while self._signals:
                self._stop(self._signals.pop(0))
            now = time.monotonic()
            for worker in self._workers:
                self._look_after(worker, environment, now)
            running = [w for w in self._workers if w.process is not None]
            if self._stopping is not None:
                if not running:
                    return
                if now > self._deadline:
                    log.warning("%d workers still running: killing them", len(running))
                    self._kill_all()
                    self._failed = True
                    return
            time.sleep(TICK_S)

    def _look_after(self, worker: Worker, environment: dict[str, str], now: float) -> None:
        process = worker.process
        if process is not None:
            code = process.poll()
            if code is None:
                return
            worker.process = None
            retire(self._folder, process.pid)  # its gauges stop counting
            lived = now - worker.started
            if self._stopping is not None:
                if code != 0:
                    log.warning("worker %d exited with %s while stopping", worker.index, code)
                    self._failed = True
                return
            worker.fast_exits = worker.fast_exits + 1 if lived < FAST_EXIT_S else 0
            if worker.fast_exits >= MAX_FAST_EXITS:
                log.error(
                    "worker %d failed %d times in a row at start (last exit %s): stopping",
                    worker.index, worker.fast_exits, _describe(code),
                )  # fmt: skip
                self._failed = True
                self._stop(signal.SIGTERM)
                return
            # At once the first time; then 1, 2, 4 ... s while it keeps failing at start.
            fast = worker.fast_exits
            delay = min(MAX_BACKOFF_S, 2.0 ** (fast - 2)) if fast > 1 else 0.0
            log.warning(
                "worker %d (pid %d) exited (%s) after %.1f s: restarting in %.0f s",
                worker.index, process.pid, _describe(code), lived, delay,
            )  # fmt: skip
            worker.start_at = now + delay
            return
        if self._stopping is None and now >= worker.start_at:
            replica = f"{environment['PITSTOP_REPLICA']}/{worker.index}"
            env = {**environment, "PITSTOP_REPLICA": replica}
            worker.process = subprocess.Popen(self._command, env=env, start_new_session=True)
            worker.started = now
            log.info("worker %d started (pid %d)", worker.index, worker.process.pid)
            if self._stopping is not None:  # a signal came while it was being started
                worker.process.send_signal(self._stopping)

    # -- stopping ------------------------------------------------------------------------------

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of whatever the main thread was
        # doing, maybe holding the log queue's lock: taking any lock here (logging does) could
        # wait for ever. So it only notes the signal; the loop acts on it within a tick.
        self._signals.append(sig)

    def _stop(self, sig: int) -> None:
        if self._stopping is None:
            settings = self._settings
            self._deadline = (
                time.monotonic() + settings.shutdown_grace_s + settings.drain_timeout_s
                + STOP_MARGIN_S
            )  # fmt: skip
            log.info("%s: stopping %d workers", signal.Signals(sig).name, len(self._workers))
        self._stopping = sig
        for worker in self._workers:
            if worker.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    def _kill_all(self) -> None:
        for worker in self._workers:
            process, worker.process = worker.process, None
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def worker_environment(
    settings: Settings, folder: Path, http_port: int, grpc_port: int
) -> dict[str, str]:
    """The environment of every worker: this one, with every setting as ``PITSTOP_*`` (so
    options given on the command line reach the workers) and the worker's own."""
    environment = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):
            value = secret.get_secret_value()  # dumped as "**********"
        if value is not None:
            text = value if isinstance(value, str) else orjson.dumps(value).decode()
            environment[f"PITSTOP_{name.upper()}"] = text
    replica = settings.replica or f"{socket.gethostname()}:{http_port}"
    environment.update(
        PITSTOP_WORKERS="1",
        PITSTOP_WORKER_DIR=str(folder),
        PITSTOP_HTTP_PORT=str(http_port),
        PITSTOP_GRPC_PORT=str(grpc_port),
        PITSTOP_REPLICA=replica,
        # Each worker keeps its own token buckets: together they allow the configured rates.
        PITSTOP_RATE_SHARE=repr(1 / max(1, settings.workers)),
    )
    return environment


def end_with_parent(folder: Path) -> None:
    """In a worker: get SIGTERM when the supervisor dies (Linux), and exit now if it already
    has (its pid, written in ``folder``, is no longer our parent)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    try:
        supervisor = int((folder / SUPERVISOR_PID).read_text())
    except (OSError, ValueError) as exc:
        missing = folder / SUPERVISOR_PID
        raise SystemExit(f"not started by a pitstop supervisor: no {missing}") from exc
    if os.getppid() != supervisor:
        raise SystemExit("the supervisor that started this worker is gone")


def _memory_folder() -> str | None:
    """/dev/shm when writable (the counters then never touch a disk), else the temp folder."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"code {code}"
