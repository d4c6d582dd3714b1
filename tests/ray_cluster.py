"""A real Ray cluster of two nodes on 127.0.0.1, stopped by the PIDs (process groups) it started.

``ray start --head --block`` and ``ray start --address ... --block`` run as child processes in
their own process groups, on free ports (Redis holds 6379), with ``RAY_AUTH_MODE=disabled``
(token authentication is on by default) and 2 logical CPUs per node. Used by tests/batch and
bench/batch.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.server import free_port, wait_for

RAY = Path(sys.executable).parent / "ray"
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@contextlib.contextmanager
def ray_cluster(temp: Path, cpus_per_node: int = 2) -> Iterator[str]:
    """The cluster's address (``127.0.0.1:PORT``) while the block runs."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node),
              "--disable-usage-stats", "--block"]  # fmt: skip
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--port", str(port), "--include-dashboard", "false",
         "--temp-dir", str(temp), "--ray-client-server-port", str(free_port()), *common],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    nodes = [head]
    try:
        if not wait_for(lambda: nodes_alive(address) >= 1, 60):
            raise RuntimeError("the Ray head did not start")
        worker = subprocess.Popen(
            [str(RAY), "start", "--address", address, *common],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        nodes.append(worker)
        if not wait_for(lambda: nodes_alive(address) >= 2, 60):
            raise RuntimeError("the second Ray node did not join")
        yield address
    finally:
        # SIGTERM lets `ray start --block` stop what it started; whatever is left of each
        # node's process group after a few seconds is killed.
        for process in reversed(nodes):
            process.send_signal(signal.SIGTERM)
        for process in reversed(nodes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def nodes_alive(address: str) -> int:
    script = (f"import ray; ray.init(address={address!r}, log_to_driver=False); "
              "print(sum(n['Alive'] for n in ray.nodes()))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    lines = result.stdout.strip().splitlines()
    return int(lines[-1]) if result.returncode == 0 and lines else 0
