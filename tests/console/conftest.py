"""Browser fixtures for the web console's end-to-end tests.

Playwright from PyPI drives Debian's Chromium (package chromium, /usr/bin/chromium; `make browser`
installs it when running as root), or the binary PITSTOP_CHROMIUM names. Playwright's own browser
builds are never used: `playwright install` cannot reach their download host here.

Every page opened through `new_page` records each console error and each uncaught exception of
its context (popups included) in a list. The `page` fixture fills `console_errors` and fails the
test at teardown if it is not empty: a test that expects errors checks the list and clears it, or
opens its own page with `new_page` and a list of its own.

The browser is package-scoped rather than session-scoped: while a sync Playwright runs, it marks
its own asyncio loop as running in the main thread between calls, so every `asyncio.run` and
every pytest-asyncio test after this package would fail with "cannot be called from a running
event loop". It is started once for the tests in tests/console and stopped after the last of
them. For the same reason the tests here are synchronous.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, WebError, sync_playwright

CHROMIUM = os.environ.get("PITSTOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # root (as CI is) cannot start the sandbox; Playwright adds it by default too
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "is_mobile": True}
TIMEOUT_MS = 10_000


def new_page(browser: Browser, errors: list[str], **context_kwargs: Any) -> Page:
    """A page in a fresh context (1280x800 unless ``viewport`` is given) whose console errors and
    uncaught exceptions are appended to ``errors``: a console error as its text, an exception as
    ``"uncaught <name>: <message>"``. The caller closes ``page.context``."""
    context = browser.new_context(**{**DESKTOP, **context_kwargs})

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_web_error(web_error: WebError) -> None:
        errors.append(f"uncaught {web_error.error.name}: {web_error.error.message}")

    context.on("console", on_console)
    context.on("weberror", on_web_error)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run `make browser` as root (Debian package chromium), "
            "or set PITSTOP_CHROMIUM to a Chromium binary",
            pytrace=False,
        )
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def console_errors() -> list[str]:
    """What the `page` fixture's page logged as errors; must be empty when the test ends."""
    return []


@pytest.fixture
def page(browser: Browser, console_errors: list[str]) -> Iterator[Page]:
    page = new_page(browser, console_errors)
    yield page
    page.context.close()
    if console_errors:
        pytest.fail(
            "the page logged errors (clear console_errors in a test that expects them):\n  "
            + "\n  ".join(console_errors),
            pytrace=False,
        )
