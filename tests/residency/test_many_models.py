"""Many models on one node, through the real server: 60 models loaded on demand within a memory
budget that holds about 10, LRU eviction, and process isolation of misbehaving handlers."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli import run_cli
from tests.residency.models import MARK, make_handler, make_weighted_onnx
from tests.server import ServerProcess, open_registry, wait_for

pytestmark = pytest.mark.timeout(240)

MODELS = 60
MODEL_MIB = 8
BUDGET_MIB = 100
MARGIN_MIB = 64
"""What the server's RSS may exceed its start-up RSS plus the budget by (docs/operations.md):
allocator slack, arenas, request buffers."""


def body(first: float = 1.0) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "data": [first, 2, 3, 4]}]}  # fmt: skip


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) / 1024


def metric(text: str, name: str) -> dict[str, float]:
    """Label text → value of every sample of ``name``."""
    return {
        labels: float(value)
        for labels, value in re.findall(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
    }


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    with open_registry(home) as registry:
        for index in range(MODELS):
            folder = make_weighted_onnx(home / f"src{index}", MODEL_MIB, seed=index)
            registry.push(folder, name=f"m{index:02d}", aliases=["production"], actor="t")
    env = {
        "PITSTOP_LOAD_POLICY": "on-demand",
        "PITSTOP_MEMORY_BUDGET": f"{BUDGET_MIB}MiB",
        "PITSTOP_DRIFT_ENABLED": "false",
    }
    with ServerProcess(home, env) as server:
        yield server


def test_sixty_models_cycle_within_the_budget_and_hot_ones_stay(crowded: ServerProcess) -> None:
    assert crowded.process is not None
    started_mib = rss_mib(crowded.process.pid)
    statuses: Counter[int] = Counter()
    peak = started_mib
    with httpx.Client(base_url=crowded.url, timeout=30) as client:
        for _cycle in range(2):
            for index in range(1, MODELS):
                for name in ("m00", f"m{index:02d}"):  # m00 is hot: used between all others
                    answer = client.post(f"/v2/models/{name}/infer", json=body())
                    statuses[answer.status_code] += 1
                peak = max(peak, rss_mib(crowded.process.pid))
        text = client.get("/metrics").text
    assert statuses == {200: 2 * 2 * (MODELS - 1)}, statuses
    cold = metric(text, "pitstop_cold_starts_total")
    evicted = metric(text, "pitstop_evictions_total")
    assert cold['{model="m00"}'] == 1  # the hot model was never evicted
    assert sum(cold.values()) >= 2 * (MODELS - 1)  # every cold one loaded once per cycle
    assert sum(evicted.values()) >= 2 * (MODELS - 1) - 16
    used = metric(text, "pitstop_memory_used_bytes")[""]
    assert used <= BUDGET_MIB * (1 << 20)
    assert metric(text, "pitstop_memory_budget_bytes")[""] == BUDGET_MIB * (1 << 20)
    loaded = metric(text, "pitstop_version_memory_bytes")  # one sample per READY version
    assert 5 <= len(loaded) <= 14, loaded  # "about 10" of the measured size
    print(f"RSS: started {started_mib:.0f} MiB, peak {peak:.0f} MiB; {len(loaded)} resident")
    assert peak <= started_mib + BUDGET_MIB + MARGIN_MIB, (started_mib, peak)


def test_any_registered_version_answers_and_metadata_lists_them(
    crowded: ServerProcess, tmp_path: Path
) -> None:
    with open_registry(crowded.home) as registry:
        folder = make_weighted_onnx(tmp_path / "v2", 1, seed=1000)
        assert registry.push(folder, name="m01", actor="t").version.number == 2  # no alias
    assert wait_for(
        lambda: "2" in httpx.get(f"{crowded.url}/v2/models/m01").json().get("versions", []), 10
    )
    answer = httpx.post(f"{crowded.url}/v2/models/m01/versions/2/infer", json=body(), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "2"
    missing = httpx.post(f"{crowded.url}/v2/models/m01/versions/9/infer", json=body())
    assert missing.status_code == 404
    assert "version 9" in missing.json()["error"]


@pytest.fixture(scope="module")
def unruly(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("unruly")
    with open_registry(home) as registry:
        for kind, isolation in (
            ("calm", None),  # python: a worker process by default
            ("crash", None),
            ("hog", {"mode": "process", "memory_limit": "400MiB"}),
            ("hang", {"mode": "process", "timeout_s": 1}),
        ):
            folder = make_handler(home / kind, kind, isolation)
            registry.push(folder, name=kind, aliases=["production"], actor="t", trust_code=True)
        folder = make_weighted_onnx(home / "steady", 1, seed=7)
        registry.push(folder, name="steady", aliases=["production"], actor="t")
    with ServerProcess(home, {"PITSTOP_DRIFT_ENABLED": "false"}) as server:
        yield server


@pytest.mark.parametrize(
    ("kind", "status", "reason"),
    [
        ("crash", 503, "model worker died (SIGABRT)"),
        ("hog", 503, "ran out of memory"),
        ("hang", 504, "did not answer within 1 s"),
    ],
)
def test_a_misbehaving_handler_fails_only_its_own_requests(
    unruly: ServerProcess, kind: str, status: int, reason: str
) -> None:
    failures: list[str] = []
    stop = threading.Event()

    def neighbours() -> None:
        with httpx.Client(base_url=unruly.url, timeout=30) as client:
            while not stop.is_set():
                for name in ("steady", "calm"):
                    answer = client.post(f"/v2/models/{name}/infer", json=body())
                    if answer.status_code != 200:
                        failures.append(f"{name}: {answer.status_code} {answer.text}")

    thread = threading.Thread(target=neighbours)
    thread.start()
    try:
        bad = httpx.post(f"{unruly.url}/v2/models/{kind}/infer", json=body(MARK), timeout=60)
        assert bad.status_code == status, bad.text
        assert reason in bad.json()["error"]
        # The worker comes back (with back-off) and serves again.
        assert wait_for(
            lambda: (
                httpx.post(
                    f"{unruly.url}/v2/models/{kind}/infer", json=body(), timeout=30
                ).status_code
                == 200
            ),
            30,
            interval=0.2,
        )
    finally:
        stop.set()
        thread.join(60)
    assert failures == []
    text = httpx.get(f"{unruly.url}/metrics").text
    restarts = metric(text, "pitstop_worker_restarts_total")
    assert restarts[f'{{model="{kind}",version="1"}}'] >= 1
    assert restarts['{model="calm",version="1"}'] == 0

    def status_says_so() -> bool:
        shown = run_cli({"PITSTOP_HOME": str(unruly.home)}, "status", kind, "--json")
        rows = json.loads(shown.stdout)
        return rows[0]["state"] == "READY" and "worker restarted" in (rows[0]["error"] or "")

    assert wait_for(status_says_so, 10, interval=0.2)  # pitstop status shows the restart
