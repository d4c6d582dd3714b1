"""Regenerate the console screenshots in docs/images (``make screenshots``).

Builds a registry with two days of history (written with a clock set in the past), starts a real
server on 127.0.0.1, sends it traffic, starts a canary, and photographs the console in Debian's
Chromium: the overview, the model page mid-canary, and the timeline with its tooltip. Takes about
a minute (the live charts need a few of the server's 10-second samples).

    .venv/bin/python -m tests.console.screenshots [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml
from playwright.sync_api import sync_playwright

from pitstop.registry import Arm, Guard, Registry, Shadow, TrafficPolicy
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.handler_models import SCORE, SHIFTED, handler
from tests.model_factory import make_python_package
from tests.server import ServerProcess, wait_for

CANDIDATE = "y = x.sum(axis=1) + 5; return {'y': y.astype(np.float32)}"  # v2's answers, new code
FAILING_LOAD = "raise ImportError('libgomp.so.1: cannot open shared object file')"


def past_clock(now: datetime) -> tuple[Callable[[], datetime], Callable[[timedelta], None]]:
    """A clock showing ``now`` minus the offset last set."""
    offset = [timedelta(0)]

    def clock() -> datetime:
        return now - offset[0]

    def at(ago: timedelta) -> None:
        offset[0] = ago

    return clock, at


def build(home: Path) -> None:
    """The models and two days of history."""
    now = datetime.now(UTC)
    clock, at = past_clock(now)
    registry = Registry.open(f"sqlite:///{home / 'registry.db'}", home / "artifacts", clock=clock)
    work = home / "src"

    def push(model: str, body: str, *aliases: str, actor: str, meta: dict[str, str]) -> int:
        source = body if body == FAILING_LOAD else handler(body)  # that one fails at import
        folder = make_python_package(work / f"{model}-{time.monotonic_ns()}", source=source)
        manifest = yaml.safe_load((folder / "pitstop.yaml").read_text())
        manifest["outputs"] = [{"name": "y", "datatype": "FP32", "shape": [-1]}]
        if body == FAILING_LOAD:
            manifest.pop("warmup", None)
        (folder / "pitstop.yaml").write_text(yaml.safe_dump(manifest))
        result = registry.push(
            folder, name=model, aliases=aliases, actor=actor, trust_code=True, meta=meta,
            reason=f"train run {meta.get('run_id', '')}".strip(),
        )  # fmt: skip
        return result.version.number

    try:
        hours = timedelta(hours=1)
        at(50 * hours)
        push("fraud", SCORE, "production", actor="alice",
             meta={"run_id": "r-1842", "auc": "0.912", "dataset": "tx-2026-11"})  # fmt: skip
        for name in ("churn", "search-ranker", "sentiment"):
            push(name, SCORE, "production", actor="alice", meta={"run_id": f"r-{name}-1"})
        at(30 * hours)
        push("fraud", SHIFTED, actor="bob",
             meta={"run_id": "r-1907", "auc": "0.924", "dataset": "tx-2026-11"})  # fmt: skip
        delivery = registry.delivery
        at(27 * hours)
        delivery.set_policy(
            "fraud", TrafficPolicy(arms=(Arm("production", 90), Arm("2", 10))),
            actor="bob", reason="A/B: does r-1907 catch more fraud?",
        )  # fmt: skip
        at(20 * hours)
        delivery.set_policy(
            "fraud", TrafficPolicy(arms=(Arm("production", 50), Arm("2", 50))),
            actor="bob", reason="no regressions at 10%: go 50/50",
        )  # fmt: skip
        at(8 * hours)
        registry.set_alias("fraud", "production", 2, actor="bob", reason="v2 wins the A/B")
        delivery.set_policy("fraud", TrafficPolicy(), actor="bob", reason="A/B over")
        at(3 * hours)
        push("fraud", CANDIDATE, actor="carol",
             meta={"run_id": "r-1950", "auc": "0.931", "dataset": "tx-2026-12"})  # fmt: skip
        push("sentiment", FAILING_LOAD, actor="dave", meta={"run_id": "r-sentiment-2"})
        at(2 * hours)
        registry.set_alias("sentiment", "production", 2, actor="dave", reason="new tokenizer")
        push("search-ranker", SHIFTED, "staging", actor="erin", meta={"run_id": "r-sr-2"})
        delivery.set_policy(
            "search-ranker", TrafficPolicy(shadows=(Shadow("staging", 0.5),)),
            actor="erin", reason="shadow the new ranker before an A/B",
        )  # fmt: skip
    finally:
        registry.close()


def traffic(server: ServerProcess, stop: threading.Event) -> None:
    rng = random.Random(7)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while not stop.is_set():
            model = rng.choice(["fraud", "fraud", "fraud", "churn", "search-ranker", "sentiment"])
            data = [round(rng.gauss(1, 0.5), 3) for _ in range(4)]
            body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": data}]}
            client.post(f"/v2/models/{model}/infer", json=body)
            time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        build(home)
        env = {"PITSTOP_COST_PER_HOUR": "2.40", "PITSTOP_DRIFT_INTERVAL_S": "2",
               "PITSTOP_DRIFT_MIN_ROWS": "50", "PITSTOP_ROLLOUT_TICK_S": "0.5"}  # fmt: skip
        server = ServerProcess(home, env).start(wait_ready=False)  # sentiment v2 never loads
        try:
            for model in ("fraud", "churn", "search-ranker"):
                ready = f"{server.url}/v2/models/{model}/ready"
                assert wait_for(lambda u=ready: httpx.get(u).status_code == 200, 30), model
            token = (home / "admin.token").read_text().strip()
            bearer = {"Authorization": f"Bearer {token}"}
            stop = threading.Event()
            sender = threading.Thread(target=traffic, args=(server, stop), daemon=True)
            sender.start()
            try:
                deployed = httpx.post(
                    f"{server.url}/v2/pitstop/models/fraud/deploy", headers=bearer,
                    json={"version": 3, "steps": [10, 50, 100], "interval_s": 3600,
                          "guard": Guard(min_requests=100).to_json(),
                          "reason": "r-1950: new features"},
                )  # fmt: skip
                assert deployed.status_code == 200, deployed.text
                time.sleep(45)  # a few 10-second samples for the charts
                shoot(server.url, token, out)
            finally:
                stop.set()
                sender.join(10)
        finally:
            server.stop()
    print(f"screenshots written to {out}")


def shoot(url: str, token: str, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(
                f"if (location.protocol === 'http:') "
                f"sessionStorage.setItem('pitstop.token', {json.dumps(token)})"
            )
            page = context.new_page()
            page.goto(f"{url}/console")
            page.locator('tr[data-model="fraud"] td.num').first.wait_for()
            page.wait_for_timeout(2500)
            page.screenshot(path=str(out / "console-overview.png"), full_page=True)
            page.goto(f"{url}/console#/models/fraud")
            page.locator("#rollout [data-field=verdict]").wait_for()
            page.locator("#charts figure svg").first.wait_for()
            page.wait_for_timeout(2500)
            page.screenshot(path=str(out / "console-canary.png"), full_page=True)
            segments = page.locator("#timeline-chart g[data-label]")
            target = segments.nth(min(2, segments.count() - 1))  # the 90/10 A/B
            target.hover()
            page.locator("#tip").wait_for()
            panel = page.locator("section.panel", has=page.locator("#timeline"))
            box = panel.bounding_box()
            assert box is not None
            page.screenshot(
                path=str(out / "console-timeline.png"),
                clip={"x": box["x"], "y": box["y"] - 60, "width": box["width"],
                      "height": box["height"] + 60},
            )  # fmt: skip
        finally:
            browser.close()


if __name__ == "__main__":
    main()
