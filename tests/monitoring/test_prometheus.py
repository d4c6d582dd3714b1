"""deploy/: the alert rules pass promtool, a real Prometheus scrapes /metrics and answers a query,
and the dashboard and rules name only metrics the server exports.

Prometheus and promtool come from Debian's ``prometheus`` package (``make test`` installs it when
run as root). Without them these tests skip, except on CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import model_factory as mf
from tests.server import ServerProcess, free_port, open_registry, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "pitstop-dashboard.json"
X = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = (
            f"{name} not found: apt-get install prometheus (Debian), or run `make test` as root"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    with open_registry(home) as registry:
        folder = mf.make_python_package(tmp_path_factory.mktemp("src") / "m")
        registry.push(folder, name="m", aliases=["production"], actor="t", trust_code=True)
    with ServerProcess(home, {"PITSTOP_COST_PER_HOUR": "1"}) as process:
        for _ in range(3):
            assert httpx.post(f"{process.url}/v2/models/m/infer", json=X).status_code == 200
        yield process


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_and_answers(server: ServerProcess, tmp_path: Path) -> None:
    binary = tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: pitstop\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{server.port}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    query = 'pitstop_requests_total{model="m",outcome="success"}'

    def value() -> float | None:
        try:
            result = httpx.get(f"{api}/query", params={"query": query}, timeout=2).json()
        except (httpx.TransportError, json.JSONDecodeError):
            return None
        series = result.get("data", {}).get("result", [])
        return float(series[0]["value"][1]) if series else None

    try:
        assert wait_for(lambda: value() is not None, 30, 0.5), (
            tmp_path / "prometheus.log"
        ).read_text()
        assert value() == 3
        groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in groups} == {
            "pitstop-availability", "pitstop-latency", "pitstop-models",
        }  # fmt: skip
        up = httpx.get(f"{api}/query", params={"query": 'up{job="pitstop"}'}).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(15)
        log.close()


def test_dashboard_and_rules_name_exported_metrics(server: ServerProcess) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    families = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    names = set()
    for family, kind in families:
        names.add(family)
        if kind == "histogram":
            names |= {family + "_bucket", family + "_sum", family + "_count"}
        if kind == "counter":
            names.add(family + "_total")
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set(re.findall(r"\b((?:pitstop|process)_[a-z0-9_]+)", " ".join(exprs)))
    used |= set(re.findall(r"\b((?:pitstop|process)_[a-z0-9_]+)", RULES.read_text()))
    assert used, "no metric names found"
    assert used <= names, f"not exported: {sorted(used - names)}"
    assert len(dashboard["panels"]) > 10
