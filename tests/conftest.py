"""Suite-wide settings for the test process itself (never for the servers it starts).

httpx builds a new SSL context for every client, and every module-level ``httpx.get`` /
``httpx.post`` is a new client: loading the CA bundle costs about 25 ms each time, for plain
http to 127.0.0.1 too. The suite makes thousands of such calls, so the default context (verify
on, no client certificate, the same CA environment) is built once and shared; SSLContext is
safe to share between clients and threads. A client given its own ``verify=`` context (the TLS
tests) is untouched.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx._transports.default as _transport

_create = _transport.create_ssl_context
_shared: dict[tuple[str | None, str | None], ssl.SSLContext] = {}


def _create_ssl_context(
    verify: Any = True, cert: Any = None, trust_env: bool = True
) -> ssl.SSLContext:
    if verify is not True or cert is not None or not trust_env:
        return _create(verify=verify, cert=cert, trust_env=trust_env)
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    if key not in _shared:
        _shared[key] = _create(verify=verify, cert=cert, trust_env=trust_env)
    return _shared[key]


_transport.create_ssl_context = _create_ssl_context  # type: ignore[assignment]
