"""Closing a listening socket without resetting the connections the kernel already queued.

Closing a TCP listener resets every connection that finished its handshake but was not yet
accepted: those clients have sent their request and get a connection reset instead of an answer.
``refuse_new_connections`` makes the kernel drop new connection attempts (clients retry their
SYN and, once the listener is closed, are refused), while the event loop goes on accepting what
is already queued; the caller then waits a moment and closes the listener with an empty queue.

Linux only (a classic BPF socket filter on the listener that drops TCP segments with SYN set and
ACK clear, i.e. new connection attempts; a handshake already under way still completes, and the
connections it creates inherit a filter that passes all their traffic); elsewhere it returns
False and closing keeps the usual small race.
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

BPF_LD_B_ABS = 0x30
"""``BPF_LD | BPF_B | BPF_ABS``: load the byte at offset k of the segment (the TCP header)."""
BPF_AND_K = 0x54
"""``BPF_ALU | BPF_AND | BPF_K``."""
BPF_JEQ_K = 0x15
"""``BPF_JMP | BPF_JEQ | BPF_K``."""
BPF_RET_K = 0x06
"""``BPF_RET | BPF_K``: keep this many bytes of the segment; 0 drops it."""
TCP_FLAGS_OFFSET = 13
TCP_SYN, TCP_ACK = 0x02, 0x10


BACKLOG = 2048
"""Listen backlog of each worker's socket (uvicorn's default)."""


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_DROP_SYN = (_SockFilter * 5)(
    _SockFilter(BPF_LD_B_ABS, 0, 0, TCP_FLAGS_OFFSET),
    _SockFilter(BPF_AND_K, 0, 0, TCP_SYN | TCP_ACK),
    _SockFilter(BPF_JEQ_K, 0, 1, TCP_SYN),  # SYN without ACK: next; else skip one
    _SockFilter(BPF_RET_K, 0, 0, 0),
    _SockFilter(BPF_RET_K, 0, 0, 0xFFFFFFFF),
)
_PROGRAM = bytes(memoryview(_SockFprog(len(_DROP_SYN), _DROP_SYN)))
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


def shared_socket(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT, so the workers of one server can
    each listen on the same port and the kernel spreads new connections over them. With
    ``listen=False`` it only holds the port (the supervisor's reservation: a socket that does
    not listen receives no connections). Raises OSError when the port is taken by another
    user's socket or one without SO_REUSEPORT."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
