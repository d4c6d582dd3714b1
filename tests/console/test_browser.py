"""The browser fixtures against real pages on a local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.console.conftest import PHONE, new_page

HEAD = '<meta charset="utf-8"><meta name="viewport" content="width=device-width">'
# An empty icon: no favicon request, whose 404 would be a console error.
HEAD += '<link rel="icon" href="data:,">'

CLICK_PAGE = f"""<!doctype html>
<html><head>{HEAD}<title>click</title></head><body>
<p id="status">waiting</p>
<button type="button" id="go">Go</button>
<script>
  document.getElementById("go").addEventListener("click", () => {{
    document.getElementById("status").textContent = "clicked";
  }});
</script>
</body></html>"""

ERROR_PAGE = f"""<!doctype html>
<html><head>{HEAD}<title>errors</title></head><body>
<p>errors</p>
<script>console.error("x"); throw new Error("boom");</script>
</body></html>"""


@contextmanager
def serve(html: str) -> Iterator[str]:
    """``html`` at / of a ThreadingHTTPServer on 127.0.0.1 (anything else 404); yields its URL."""
    body = html.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="console-test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_click_changes_the_text(page: Page) -> None:
    with serve(CLICK_PAGE) as url:
        page.goto(url)
        status = page.locator("#status")
        expect(status).to_have_text("waiting")
        page.get_by_role("button", name="Go").click()
        expect(status).to_have_text("clicked")
    assert page.viewport_size == {"width": 1280, "height": 800}


def test_console_errors_and_uncaught_exceptions_are_recorded(browser: Browser) -> None:
    errors: list[str] = []
    phone = new_page(browser, errors, **PHONE)
    try:
        with (
            serve(ERROR_PAGE) as url,
            phone.context.expect_event("weberror"),
            phone.expect_console_message(lambda message: message.type == "error"),
        ):
            phone.goto(url)
        assert phone.evaluate("window.innerWidth") == 390
    finally:
        phone.context.close()
    assert errors == ["x", "uncaught Error: boom"]
