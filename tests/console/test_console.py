"""The web console end to end: a real server, a real Chromium, the CLI and curl-like clients.

Every page opened here fails its test on any browser console error (tests/console/conftest.py).
"""

from __future__ import annotations

import getpass
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.cli import run_process as cli
from tests.console.conftest import PHONE, new_page
from tests.handler_models import SCORE, SHIFTED, push
from tests.server import ServerProcess, open_registry, wait_for

pytestmark = pytest.mark.timeout(180)

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def served_version(server: ServerProcess, model: str) -> str:
    response = httpx.post(f"{server.url}/v2/models/{model}/infer", json=BODY, timeout=5)
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def read_token(server: ServerProcess) -> str:
    made = cli(server.home, "token", "create", "viewer", "--scope", "read")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    probe = f"{server.url}/v2/pitstop/whoami"
    bearer = {"Authorization": f"Bearer {secret}"}
    assert wait_for(lambda: httpx.get(probe, headers=bearer).status_code == 200, 10)
    return secret


def sign_in(page: Page, server: ServerProcess, token: str, fragment: str = "") -> None:
    """Through the login form, as a person would (Tab, type, Enter)."""
    page.goto(f"{server.url}/console{fragment}")
    field = page.get_by_label("Bearer token")
    expect(field).to_be_focused()
    field.fill(token)
    field.press("Enter")
    expect(page.locator("#who")).not_to_be_empty()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("home")
    with open_registry(home) as registry:
        push(registry, home / "v1", "fraud", SCORE, "production")
        push(registry, home / "v2", "fraud", SHIFTED)
        push(registry, home / "other", "churn", SCORE, "production")
    env = {"PITSTOP_ROLLOUT_TICK_S": "0.2", "PITSTOP_DRIFT_INTERVAL_S": "1"}
    with ServerProcess(home, env) as process:
        yield process


@pytest.fixture(scope="module")
def admin_token(server: ServerProcess) -> str:
    return (server.home / "admin.token").read_text().strip()


def test_the_overview_shows_the_version_curl_just_got(
    server: ServerProcess, admin_token: str, page: Page
) -> None:
    got = served_version(server, "fraud")
    sign_in(page, server, admin_token)
    row = page.locator('tr[data-model="fraud"]')
    serving = row.locator('[data-alias="production"] [data-field="serving"]')
    expect(serving).to_have_text(f"v{got}")
    expect(row).to_contain_text("READY")
    # The numbers refresh without a reload: the request rate appears once traffic arrives.
    for _ in range(20):
        served_version(server, "fraud")
    expect(row.locator("td.num").first).not_to_have_text("\u2013", timeout=8000)
    # Keyboard: the model's link is reachable and opens its page.
    link = row.get_by_role("link", name="fraud")
    link.focus()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_contain_text("fraud")
    expect(page.locator("#versions tr[data-version]")).to_have_count(2)


def test_a_rollback_clicked_in_the_console_reaches_curl_within_a_second_and_the_history(
    server: ServerProcess, admin_token: str, page: Page
) -> None:
    moved = cli(server.home, "alias", "set", "fraud", "production", "2", "--reason", "try v2")
    assert moved.returncode == 0, moved.stderr
    assert wait_for(lambda: served_version(server, "fraud") == "2", 10)
    sign_in(page, server, admin_token, "#/models/fraud")
    page.get_by_role("button", name="Roll back").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("production moves from v2 back to v1")
    confirm = dialog.get_by_role("button", name="Confirm")
    expect(confirm).to_be_disabled()  # a reason is required
    dialog.get_by_label("Reason").fill("v2 scores are shifted")
    confirm.click()
    clicked = time.monotonic()
    expect(dialog).to_be_hidden()
    assert wait_for(lambda: served_version(server, "fraud") == "1", 1.0, interval=0.02), (
        f"still v2 {time.monotonic() - clicked:.2f} s after the click"
    )
    history = cli(server.home, "history", "fraud", "--limit", "5", "--json")
    assert history.returncode == 0, history.stderr
    newest = json.loads(history.stdout)[0]
    assert newest["action"] == "alias.set", newest
    assert (newest["before"], newest["after"]) == ({"version": 2}, {"version": 1})
    assert newest["reason"] == "v2 scores are shifted"
    assert newest["actor"] == "token:admin"
    # The page follows without a reload.
    expect(page.locator("#aliases")).to_contain_text("production → v1")


def test_the_timeline_shows_a_deploy_made_through_the_cli(
    server: ServerProcess, admin_token: str, page: Page
) -> None:
    deployed = cli(
        server.home, "deploy", "fraud", "--version", "2", "--steps", "30,100",
        "--interval", "1h", "--reason", "cli deploy",
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr
    sign_in(page, server, admin_token, "#/models/fraud")
    expect(page.locator("#rollout")).to_contain_text("v2 against v1")
    expect(page.locator("#rollout [data-field=verdict]")).to_have_text("HOLD")
    last = page.locator("#timeline-chart g[data-label]").last
    expect(last).to_have_attribute("data-label", re.compile(r"v1 70%, v2 30%"), timeout=5000)
    last.hover()
    tip = page.locator("#tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("v1 70%, v2 30%")
    expect(tip).to_contain_text(f"rollout.start by {getpass.getuser()}: cli deploy")
    # Keyboard: a segment takes focus and says the same.
    last.focus()
    expect(tip).to_contain_text("v1 70%, v2 30%")
    # Abort it from the console, so the other tests see a quiet model.
    page.get_by_role("button", name="Abort rollout").click()
    page.get_by_role("dialog").get_by_label("Reason").fill("timeline test done")
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    expect(page.locator("#rollout")).to_contain_text("ABORTED")


def test_a_read_only_token_sees_no_actions_and_the_api_refuses_them(
    server: ServerProcess, page: Page
) -> None:
    viewer = read_token(server)
    sign_in(page, server, viewer, "#/models/fraud")
    expect(page.locator("#who")).to_contain_text("token:viewer (read)")
    expect(page.locator("#versions tr[data-version]")).to_have_count(2)
    expect(page.locator("#traffic")).not_to_be_empty()
    expect(page.locator("body")).to_have_attribute("data-rendered", "model")
    expect(page.locator("#actions button")).to_have_count(0)
    expect(page.locator("button[data-stop-shadow]")).to_have_count(0)
    bearer = {"Authorization": f"Bearer {viewer}"}
    base = f"{server.url}/v2/pitstop/models/fraud"
    refused = [
        httpx.post(base + "/rollback", headers=bearer, json={"reason": "x"}),
        httpx.put(base + "/aliases/production", headers=bearer, json={"version": 2}),
        httpx.put(base + "/traffic", headers=bearer, json={"arms": []}),
        httpx.post(base + "/deploy", headers=bearer, json={"version": 2}),
    ]
    assert [r.status_code for r in refused] == [403] * 4, [r.text for r in refused]
    assert served_version(server, "fraud") == "1"


def test_weights_aliases_and_shadows_are_changed_from_the_console(
    server: ServerProcess, admin_token: str, page: Page
) -> None:
    admin = {"Authorization": f"Bearer {admin_token}"}
    traffic = f"{server.url}/v2/pitstop/models/churn/traffic"
    shadowed = {"arms": [{"target": "production", "weight": 100}],
                "shadows": [{"target": "1", "rate": 0.5}], "reason": "set up"}  # fmt: skip
    assert httpx.put(traffic, headers=admin, json=shadowed).status_code == 200
    sign_in(page, server, admin_token, "#/models/churn")
    dialog = page.get_by_role("dialog")

    page.get_by_role("button", name="Move an alias").click()
    dialog.get_by_label("Alias").fill("staging")
    dialog.get_by_label("Version").select_option("1")
    expect(dialog).to_contain_text("staging will point at v1 (now unset)")
    dialog.get_by_label("Reason").fill("stage v1 for the QA team")
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#aliases")).to_contain_text("staging → v1")

    page.get_by_role("button", name="Set A/B weights").click()
    dialog.get_by_label("production (%)").fill("80")
    dialog.get_by_label("Add an arm").fill("staging")
    dialog.get_by_label("Its weight").fill("20")
    expect(dialog).to_contain_text("split production 80%, staging 20%")
    dialog.get_by_label("Reason").fill("try staging on a fifth")
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#traffic")).to_contain_text("production 80 · staging 20")

    page.locator("button[data-stop-shadow]").click()
    expect(dialog).to_contain_text("stop being copied to 1")
    dialog.get_by_label("Reason").fill("enough shadow data")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#shadows")).to_contain_text("No shadow traffic")

    policy = httpx.get(traffic, headers=admin).json()["policy"]
    assert policy["arms"] == [
        {"target": "production", "weight": 80.0},
        {"target": "staging", "weight": 20.0},
    ]
    assert policy["shadows"] == []
    events = httpx.get(
        f"{server.url}/v2/pitstop/models/churn/history?limit=3", headers=admin
    ).json()["events"]
    assert [(e["action"], e["reason"], e["actor"]) for e in events] == [
        ("policy.set", "enough shadow data", "token:admin"),
        ("policy.set", "try staging on a fifth", "token:admin"),
        ("alias.set", "stage v1 for the QA team", "token:admin"),
    ]


def test_the_console_is_readable_on_a_phone_and_survives_a_restart(
    server: ServerProcess, admin_token: str, browser: Browser
) -> None:
    errors: list[str] = []
    page = new_page(browser, errors, **PHONE)
    try:
        sign_in(page, server, admin_token)
        expect(page.locator('tr[data-model="fraud"]')).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than the phone"
        server.stop()
        expect(page.locator("#banner")).to_contain_text("does not answer", timeout=8000)
        expect(page.locator('tr[data-model="fraud"]')).to_be_visible()  # last figures kept
        server.start()
        expect(page.locator("#banner")).to_be_hidden(timeout=10_000)
        expect(page.locator('tr[data-model="fraud"] [data-field="serving"]').first).to_have_text(
            "v1"
        )
        # The outage itself shows as failed fetches in the console, and only that.
        unexpected = [e for e in errors if "ERR_CONNECTION_REFUSED" not in e]
        assert unexpected == []
    finally:
        page.context.close()


def test_the_console_can_be_turned_off(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, {"PITSTOP_CONSOLE": "false"}) as server:
        assert httpx.get(server.url + "/console").status_code == 404


def test_fifty_models_and_a_thousand_events_render_within_a_second(
    tmp_path: Path, browser: Browser
) -> None:
    home = tmp_path / "home"
    with open_registry(home) as registry:
        push(registry, tmp_path / "busy1", "busy", SCORE, "production")
        push(registry, tmp_path / "busy2", "busy", SHIFTED)
        for number in range(1000 - 2):
            registry.set_alias("busy", "production", 2 - number % 2, actor="t", reason=f"#{number}")
        for index in range(49):
            push(registry, tmp_path / f"m{index}", f"model-{index:02d}", SCORE, "production")
        assert len(registry.history("busy")) >= 1000
    with ServerProcess(home, {}) as server:
        token = (home / "admin.token").read_text().strip()
        errors: list[str] = []
        page = new_page(browser, errors)
        try:
            store = f"sessionStorage.setItem('pitstop.token', {token!r})"
            page.add_init_script(f"if (location.protocol === 'http:') {store}")
            timings = {}
            for name, fragment in (("overview", ""), ("model", "#/models/busy")):
                page.goto(f"{server.url}/console{fragment}")
                expect(page.locator("body")).to_have_attribute("data-rendered", name)
                timings[name] = page.evaluate(
                    "performance.getEntriesByName('pitstop:rendered')[0].startTime"
                )
                page.goto("about:blank")
            page.goto(f"{server.url}/console")
            expect(page.locator("#models tbody tr")).to_have_count(50)
            page.goto(f"{server.url}/console#/models/busy")
            segments = page.locator("#timeline-chart g[data-label]")
            expect(segments.nth(900)).to_be_attached()
            assert errors == []
        finally:
            page.context.close()
    print(f"first render: {timings}")  # the figure docs/console.md quotes
    assert timings["overview"] < 1000, timings
    assert timings["model"] < 1000, timings
