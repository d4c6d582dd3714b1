"""A real pitstop server process on 127.0.0.1 for tests, stopped by its PID."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from pitstop.registry import Registry


def open_registry(home: Path) -> Registry:
    """The embedded registry a server with ``PITSTOP_HOME=home`` uses (SQLite + artifacts)."""
    return Registry.open(f"sqlite:///{home / 'registry.db'}", home / "artifacts")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``python -m pitstop serve`` with its own PITSTOP_HOME; logs go to ``<home>/server.log``."""

    def __init__(
        self,
        home: Path,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        *,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """``verify``: the server speaks TLS; readiness is polled over https with this
        client context."""
        self.home = home
        self._args = list(args)
        self.port = free_port()
        self._verify = verify
        self.url = f"{'https' if verify else 'http'}://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = home / f"server-{self.port}.log"
        self._env = {
            **os.environ,
            "PITSTOP_HOME": str(home),
            "PITSTOP_WATCH_INTERVAL_S": "0.2",
            "PITSTOP_SHUTDOWN_GRACE_S": "0",
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "pitstop", "serve"),
                *("--http-port", str(self.port), "--grpc-port", str(self.grpc_port)),
                *self._args,
            ],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        path = "/v2/health/ready" if wait_ready else "/v2/health/live"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                verify = self._verify if self._verify is not None else True
                if httpx.get(self.url + path, timeout=1.0, verify=verify).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not {path} after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int | None:
        process = self.process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        os.kill(process.pid, signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            return process.wait(timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def wait_for(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it returns true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False
