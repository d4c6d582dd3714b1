"""Closing the listener: queued connections are kept, new ones are refused (Linux)."""

from __future__ import annotations

import socket
import sys

import pytest

from pitstop.transports.listener import refuse_new_connections

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the socket filter is Linux-only"
)


def test_queued_connections_survive_and_new_ones_are_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        address = listener.getsockname()
        queued = socket.create_connection(address, timeout=2)
        assert refuse_new_connections(listener)
        with pytest.raises(TimeoutError):
            socket.create_connection(address, timeout=0.3).close()
        listener.settimeout(2)
        accepted, _ = listener.accept()
        with queued, accepted:
            queued.sendall(b"request")
            assert accepted.recv(16) == b"request"
            accepted.sendall(b"answer")
            assert queued.recv(16) == b"answer"


def test_a_socket_that_cannot_take_the_filter_reports_false() -> None:
    class Refusing:
        def setsockopt(self, level: int, optname: int, value: bytes, /) -> None:
            raise OSError("not a socket")

    assert refuse_new_connections(Refusing()) is False
