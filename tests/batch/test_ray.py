"""``pitstop batch --engine ray`` on a real two-node Ray cluster on 127.0.0.1: results equal the
local engine's, and an actor killed mid-run is restarted by Ray with the result still complete.

The cluster is tests/ray_cluster.py's; actors take half a CPU each (on 2 cores whole CPUs leave
the job waiting for resources)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pitstop.batch.table import read_output
from tests import model_factory as mf
from tests.batch.test_batch_cli import SLOW_HANDLER, pitstop
from tests.ray_cluster import ENV, ray_cluster
from tests.server import open_registry

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ray_cluster(tmp_path_factory.mktemp("ray")) as address:
        yield address


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray-home")
    with open_registry(root / "home") as registry:
        slow = mf.make_python_package(root / "slow", source=SLOW_HANDLER)
        registry.push(slow, name="slow", aliases=["production"], actor="ci", trust_code=True)
    return root / "home"


def folder_of_parquet(path: Path, files: int, rows: int) -> Path:
    path.mkdir(parents=True)
    for number in range(files):
        x = np.random.default_rng(number).random((rows, 4), dtype=np.float32)
        ids = range(number * rows, (number + 1) * rows)
        pq.write_table(pa.table({"id": list(ids), "x": pa.array(x.tolist())}),
                       path / f"part-{number}.parquet")  # fmt: skip
    return path


RAY_ARGS = ["--engine", "ray", "--concurrency", "2", "--actor-cpus", "0.5", "--keep", "id",
            "--batch-size", "100"]  # fmt: skip


def test_ray_results_equal_the_local_engines(cluster: str, home: Path, tmp_path: Path) -> None:
    data = folder_of_parquet(tmp_path / "in", files=4, rows=500)
    local, remote = tmp_path / "local", tmp_path / "ray"
    pitstop(home, "batch", "slow", str(data), str(local), "--keep", "id", "--workers", "1")
    pitstop(home, "batch", "slow", str(data), str(remote), *RAY_ARGS, "--address", cluster)
    ours, theirs = read_output(local), read_output(remote)
    assert theirs.num_rows == 2_000
    assert theirs.column("id").to_pylist() == ours.column("id").to_pylist()  # order kept
    assert np.allclose(np.asarray(theirs.column("y").to_pylist()),
                       np.asarray(ours.column("y").to_pylist()))  # fmt: skip
    ledger = json.loads((remote / "_pitstop_batch.json").read_text())
    assert (ledger["rows"], ledger["errors"], ledger["finished"]) == (2_000, 0, True)


def test_an_actor_killed_mid_run_is_retried_and_the_result_is_complete(
    cluster: str, home: Path, tmp_path: Path
) -> None:
    data = folder_of_parquet(tmp_path / "in", files=8, rows=1_000)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "pitstop", "batch", "slow", str(data), str(out), *RAY_ARGS,
         "--address", cluster, "--batch-size", "10"],  # 800 calls of >= 3 ms: seconds
        env={**ENV, "PITSTOP_HOME": str(home)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        victims: list[int] = []
        deadline = time.monotonic() + 120
        while not victims and time.monotonic() < deadline and process.poll() is None:
            victims = _actor_pids()
            time.sleep(0.2)
        assert victims, "no scoring actor appeared"
        time.sleep(0.5)  # let it take some blocks
        assert process.poll() is None, "the run ended before the kill"
        os.kill(victims[0], signal.SIGKILL)
        _stdout, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 0, stderr[-3000:]
    result = read_output(out)
    assert sorted(result.column("id").to_pylist()) == list(range(8_000))  # none lost, none twice


def _actor_pids() -> list[int]:
    """Processes of the batch's actors (Ray names them after the actor class)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"MapWorker" in command and b"_Actor" in command:
            found.append(int(entry.name))
    return found
