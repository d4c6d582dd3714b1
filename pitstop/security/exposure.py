"""Whether a server may start as configured, and whether anonymous callers may infer.

A pure decision over the bind address and the security settings, made once at start:

- inference authentication ``auto`` is on unless the server binds a loopback address;
- a server reachable from other hosts with neither TLS nor inference authentication refuses to
  start unless told ``PITSTOP_INSECURE=1`` (``--insecure``), and then says so in its logs and in
  ``GET /v2`` (``pitstop_insecure``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from pitstop.errors import InvalidInput


@dataclass(frozen=True)
class Exposure:
    open_inference: bool
    """Anonymous callers may infer, describe and observe."""
    insecure: str | None
    """Why this server is exposed without protection (None: it is not)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` included); a name that is not an
    address counts as reachable from elsewhere."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure(
    host: str,
    *,
    tls: bool,
    inference_auth: Literal["auto", "on", "off"],
    insecure: bool,
) -> Exposure:
    """The decision; InvalidInput (naming the settings) when the server must not start."""
    local = is_loopback(host)
    open_inference = inference_auth == "off" or (inference_auth == "auto" and local)
    if local or tls or not open_inference:
        return Exposure(open_inference, None)
    reason = f"listening on {host} (not loopback) without TLS and with inference authentication off"
    if not insecure:
        raise InvalidInput(
            f"refusing to start: {reason}. Set PITSTOP_TLS_CERT and PITSTOP_TLS_KEY, or "
            "PITSTOP_INFERENCE_AUTH=on (or auto), or accept the risk with --insecure "
            "(PITSTOP_INSECURE=1)"
        )
    return Exposure(open_inference, reason)
