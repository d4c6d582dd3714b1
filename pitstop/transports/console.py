"""The web console's files at ``/console`` (``PITSTOP_CONSOLE``, on by default).

The console is static: one HTML page, one script and one style sheet shipped in the package
(``console_assets/``, no build step and no third-party code). Serving them needs no
credentials, as a login page needs none; everything the page shows it reads from the JSON
APIs (``catalog.py``, ``admin.py``, ``feedback.py``, ``observability.py``) with the token the
user typed, which the page keeps in the tab's ``sessionStorage`` only. A strict Content
Security Policy allows scripts, styles and connections from this origin only.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ASSETS: Final = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}

HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _read(name: str) -> bytes:
    return resources.files("pitstop.transports").joinpath("console_assets", name).read_bytes()


class Console:
    """The console's routes; the files are read once, at start."""

    def __init__(self) -> None:
        self._files = {name: _read(name) for name in ASSETS}
        self._etags = {
            name: '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            for name, body in self._files.items()
        }

    def routes(self) -> list[Route]:
        return [
            Route("/console", self.page, methods=["GET", "HEAD"]),
            Route("/console/{name}", self.asset, methods=["GET", "HEAD"]),
        ]

    async def page(self, request: Request) -> Response:
        return self._serve(request, "index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS or name == "index.html":
            return Response(b'{"error":"no such console file"}', 404, media_type="application/json")
        return self._serve(request, name)

    def _serve(self, request: Request, name: str) -> Response:
        etag = self._etags[name]
        headers = {**HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(self._files[name], media_type=ASSETS[name], headers=headers)
