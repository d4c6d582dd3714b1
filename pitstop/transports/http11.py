"""uvicorn's HTTP/1.1 protocol (httptools), answering its own errors in pitstop's JSON shape.

uvicorn answers bytes that are not HTTP (a bad request line, a malformed header, conflicting
framing headers) with a ``text/plain`` 400 of its own, without asking the app; every other error
of this server is ``{"error": "..."}`` JSON, and clients parse it as such. (Its other own
answer, a 500 when an app fails before starting a response, cannot happen here: the inference
front and Starlette's error middleware always answer.)
"""

from __future__ import annotations

from typing import Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_MALFORMED: Final = orjson.dumps(
    {"error": "invalid HTTP request: the request line, headers or framing are not HTTP/1.1"}
)


class JsonErrorsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        content = _MALFORMED
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(content)).encode() + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + content)
        self.transport.close()
