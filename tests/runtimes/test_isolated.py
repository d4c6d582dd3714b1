"""Process isolation: python handlers in real worker subprocesses that crash, leak, hang and
fail, and a server process that survives all of it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pitstop.errors import DeadlineExceeded, InvalidInput, LoadError, PermissionDenied, Unavailable
from pitstop.runtimes.isolated import IsolatedRuntime, restart_delay
from tests import model_factory as mf
from tests.runtimes.package import loaded, read_package

pytestmark = pytest.mark.timeout(60)

# One handler for every failure: the first element of x picks it.
HANDLER = """\
import os
import time

import numpy as np
from pitstop.errors import InvalidInput

class Model:
    def predict(self, inputs):
        x = inputs["x"]
        first = float(x.flat[0])
        if first == 666:
            os.abort()
        if first == 7:
            hoard = []
            while True:
                hoard.append(bytearray(50 * 2**20))
        if first == 9:
            time.sleep(3600)
        if first == 5:
            raise KeyError("boom")
        if first < 0:
            raise InvalidInput("input 'x': must be positive")
        return {"y": x * 2}
"""

TYPES_HANDLER = """\
import numpy as np

class Model:
    def predict(self, inputs):
        return {
            "f": inputs["f"] * 2,
            "i": inputs["i"] + 1,
            "b": np.array([v[::-1] + b"!" for v in inputs["b"].ravel()], dtype=object)
                 .reshape(inputs["b"].shape),
        }
"""

ONE = {"x": np.ones((1, 4), dtype=np.float32)}
Factory = Callable[..., IsolatedRuntime]


def marked(value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 4), value, dtype=np.float32)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_children() -> set[int]:
    """Pids of this process's live children running the worker module (zombies included)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or b"pitstop.runtimes.worker" not in (
                (entry / "cmdline").read_bytes()
            ):
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == os.getpid():
            pids.add(int(entry.name))
    return pids


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[Factory]:
    """Builds loaded IsolatedRuntimes over HANDLER (or ``source``); unloads them afterwards."""
    made: list[IsolatedRuntime] = []

    def make(source: str = HANDLER, folder: Path | None = None, **options: Any) -> IsolatedRuntime:
        folder = folder or mf.make_python_package(tmp_path / f"pkg{len(made)}", source=source)
        name, context = read_package(folder, trust_code=True)
        runtime = IsolatedRuntime(name, context, **{"restart_backoff_s": 0.05, **options})
        made.append(runtime)
        runtime.load()
        return runtime

    yield make
    for runtime in made:
        runtime.unload()


def recovered(runtime: IsolatedRuntime) -> None:
    """The runtime restarted its worker and serves again."""
    assert runtime.wait_ready(20)
    np.testing.assert_array_equal(runtime.predict(ONE)["y"], np.full((1, 4), 2.0))


def test_fp32_int64_and_bytes_round_trip_as_in_process(tmp_path: Path, isolated: Factory) -> None:
    folder = mf.make_identity_package(tmp_path, {"f": "FP32", "i": "INT64", "b": "BYTES"})
    (folder / "handler.py").write_text(TYPES_HANDLER)
    inputs = {
        "f": np.arange(8, dtype=np.float32).reshape(2, 4) / 3,
        "i": np.array([[2**40, -7, 0]], dtype=np.int64),
        "b": np.array([[b"abc", b""], [b"\x00\xff", "é".encode()]], dtype=object),
    }
    in_process = loaded(folder, trust_code=True).predict(inputs)
    runtime = isolated(folder=folder)
    assert runtime.metadata().platform == "python"
    outputs = runtime.predict(inputs)
    assert set(outputs) == set(in_process)
    for name, expected in in_process.items():
        assert outputs[name].dtype == expected.dtype, name
        assert outputs[name].shape == expected.shape, name
        assert outputs[name].tolist() == expected.tolist(), name
    assert outputs["b"].tolist() == [[b"cba!", b"!"], [b"\xff\x00!", "é".encode()[::-1] + b"!"]]


def test_an_abort_fails_that_request_and_the_worker_restarts(isolated: Factory) -> None:
    runtime = isolated()
    first = runtime.pid
    with pytest.raises(Unavailable, match=r"died \(SIGABRT\); restarting"):
        runtime.predict(marked(666))
    assert runtime.last_failure is not None
    assert runtime.last_failure.startswith("died (SIGABRT) at ")
    recovered(runtime)
    assert runtime.restarts == 1
    assert first is not None
    assert runtime.pid != first
    assert not alive(first)  # reaped, no zombie


def test_requests_fail_fast_while_the_worker_restarts(isolated: Factory) -> None:
    runtime = isolated(restart_backoff_s=30.0)
    with pytest.raises(Unavailable):
        runtime.predict(marked(666))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="restarting after it died"):
        runtime.predict(ONE)
    assert time.monotonic() - started < 0.5
    assert runtime.pid is None


def test_a_worker_out_of_memory_is_replaced(isolated: Factory) -> None:
    runtime = isolated(memory_limit_bytes=300 * 2**20)
    with pytest.raises(Unavailable, match=r"out of memory \(limit 300 MiB\); restarting"):
        runtime.predict(marked(7))
    recovered(runtime)
    assert runtime.restarts == 1


def test_a_hung_worker_is_killed_after_the_call_timeout(isolated: Factory) -> None:
    runtime = isolated(call_timeout_s=1.0)
    hung = runtime.pid
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="did not answer within 1 s; restarting"):
        runtime.predict(marked(9))
    assert 0.9 <= time.monotonic() - started < 2.0
    assert hung is not None
    assert not alive(hung)
    recovered(runtime)


def test_concurrent_predicts_all_answer(isolated: Factory) -> None:
    runtime = isolated()
    answers: dict[tuple[int, int], float] = {}

    def client(number: int) -> None:
        for call in range(25):
            value = number * 100 + call + 10
            answers[(number, call)] = float(runtime.predict(marked(value))["y"][0, 0])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 200
    assert all(y == 2 * (n * 100 + c + 10) for (n, c), y in answers.items())


def test_unload_leaves_no_process(isolated: Factory) -> None:
    runtime = isolated()
    pid = runtime.pid
    assert pid is not None
    assert alive(pid)
    assert worker_children() == {pid}
    assert (runtime.memory_bytes() or 0) > 10 * 2**20
    runtime.unload()
    assert not alive(pid)
    assert worker_children() == set()
    assert runtime.pid is None
    assert runtime.memory_bytes() is None
    with pytest.raises(Unavailable, match="not loaded"):
        runtime.predict(ONE)


def test_unload_during_a_restart_back_off_starts_nothing(isolated: Factory) -> None:
    runtime = isolated(restart_backoff_s=0.5)
    with pytest.raises(Unavailable):
        runtime.predict(marked(666))
    runtime.unload()
    time.sleep(1.0)
    assert runtime.pid is None
    assert worker_children() == set()
    assert runtime.restarts == 0


def test_handler_errors_come_back_as_in_process_and_the_worker_stays(
    isolated: Factory,
) -> None:
    runtime = isolated()
    pid = runtime.pid
    with pytest.raises(InvalidInput, match="input 'x': must be positive"):
        runtime.predict(marked(-1))
    with pytest.raises(KeyError, match="boom"):
        runtime.predict(marked(5))
    assert runtime.pid == pid
    assert runtime.restarts == 0
    np.testing.assert_array_equal(runtime.predict(ONE)["y"], np.full((1, 4), 2.0))


def test_load_errors_keep_their_kind_and_leave_no_worker(tmp_path: Path, isolated: Factory) -> None:
    folder = mf.make_python_package(tmp_path / "untrusted")
    name, context = read_package(folder)  # no trust_code
    with pytest.raises(PermissionDenied, match="--trust-code"):
        IsolatedRuntime(name, context).load()
    with pytest.raises(LoadError, match="broken handler"):
        isolated(source="raise RuntimeError('broken handler')\n")
    generator = "class Model:\n    def predict(self, inputs):\n        yield inputs\n"
    with pytest.raises(LoadError, match="decoupled models cannot run isolated"):
        isolated(source=generator)
    with pytest.raises(LoadError, match="memory limit 1 MiB"):
        isolated(memory_limit_bytes=2**20)
    assert worker_children() == set()


@pytest.mark.parametrize(
    ("previous", "uptime", "expected"),
    [
        (None, 0.0, 0.5),  # first failure
        (0.5, 1.0, 1.0),  # failing again soon: doubles
        (16.0, 1.0, 30.0),  # capped
        (30.0, 60.0, 0.5),  # stayed up a minute: back to the start
    ],
)
def test_restart_back_off(previous: float | None, uptime: float, expected: float) -> None:
    assert restart_delay(previous, uptime, 0.5, 30.0) == expected


ENVIRONMENT_HANDLER = """\
import os

import numpy as np

class Model:
    def predict(self, inputs):
        names = ("PITSTOP_ADMIN_TOKEN", "AWS_SECRET_ACCESS_KEY", "HOME")
        seen = [os.environ.get(name, "") for name in names]
        return {"y": np.array([[len(value) for value in seen] + [0]], dtype=np.float32)}
"""


def test_a_worker_does_not_inherit_the_servers_credentials(
    isolated: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PITSTOP_ADMIN_TOKEN", "s" * 40)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k" * 40)
    monkeypatch.setenv("HOME", "/home/somebody")
    runtime = isolated(source=ENVIRONMENT_HANDLER)
    token, secret, home = runtime.predict(ONE)["y"][0, :3].tolist()
    assert (token, secret) == (0, 0)
    assert home == len("/home/somebody")  # the rest of the environment is the server's
