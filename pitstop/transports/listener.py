"""Closing a listening socket without resetting the connections the kernel already queued.

Closing a TCP listener resets every connection that finished its handshake but was not yet
accepted: those clients have sent their request and get a connection reset instead of an answer.
``refuse_new_connections`` makes the kernel drop new connection attempts (clients retry their
SYN and, once the listener is closed, are refused), while the event loop goes on accepting what
is already queued; the caller then waits a moment and closes the listener with an empty queue.

Linux only (a classic BPF socket filter that drops every packet on the listener); elsewhere it
returns False and closing keeps the usual small race.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import sys
from typing import Protocol

log = logging.getLogger(__name__)

SO_ATTACH_FILTER = 26
"""From <asm-generic/socket.h>; not exported by Python's socket module."""

BPF_RET_K = 0x06
"""``BPF_RET | BPF_K``: return the constant, here 0 bytes, i.e. drop the packet."""


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_DROP_ALL = (_SockFilter * 1)(_SockFilter(BPF_RET_K, 0, 0, 0))
_PROGRAM = bytes(memoryview(_SockFprog(1, _DROP_ALL)))
"""``struct sock_fprog``; the kernel copies the program at setsockopt time."""


class Listener(Protocol):
    """A listening socket (a ``socket.socket`` or asyncio's ``TransportSocket``)."""

    def setsockopt(self, level: int, optname: int, value: bytes, /) -> None: ...


def refuse_new_connections(listener: Listener) -> bool:
    """Make the kernel drop new connection attempts to ``listener``; connections already queued
    stay acceptable, and connections already accepted are untouched. True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _PROGRAM)
    except OSError as exc:
        log.warning("could not stop new connections before closing the listener: %s", exc)
        return False
    return True
