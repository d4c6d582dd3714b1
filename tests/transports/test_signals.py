"""Signal handlers take no lock. A Python signal handler runs in the main thread between two
bytecodes of whatever it was doing; if that was logging (holding the log queue's lock) and the
handler logs too, the process waits for ever. That happened: a worker whose supervisor was
killed got SIGTERM while logging at start, and stayed alive, drained of nothing, for an hour.

Here another thread plays the interrupted main thread: it holds a lock every log record of the
handler's module must take, and the handler must still return at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from pitstop.cli.mlflow import SignalStop
from pitstop.settings import Settings
from pitstop.transports.app import Server
from pitstop.transports.supervisor import Supervisor


class BlockingHandler(logging.Handler):
    """Every record waits for ``gate``: as the log queue's lock would, held by the main thread."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Lock()
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self.gate:
            self.records.append(record.getMessage())


@pytest.fixture
def blocking() -> Iterator[BlockingHandler]:
    handler = BlockingHandler()
    loggers = [logging.getLogger("pitstop.transports.app"),
               logging.getLogger("pitstop.transports.supervisor")]  # fmt: skip
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)  # so that a record would be emitted
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def returns_while_logging_is_held(handler: BlockingHandler, call: object) -> bool:
    assert callable(call)
    done = threading.Event()
    with handler.gate:
        thread = threading.Thread(target=lambda: (call(), done.set()), daemon=True)
        thread.start()
        returned = done.wait(1.0)
    thread.join(5)
    return returned


class Draining:
    def __init__(self) -> None:
        self.draining = False

    def begin_drain(self) -> None:
        self.draining = True


def test_sigterm_in_a_worker_only_hands_the_drain_to_the_loop(blocking: BlockingHandler) -> None:
    engine = Draining()
    server = Server(uvicorn.Config(app=lambda: None), engine, grace_s=0.05)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    server._loop = loop  # as serve() sets it
    try:
        assert returns_while_logging_is_held(
            blocking, lambda: server.handle_exit(signal.SIGTERM, None)
        )
        assert not engine.draining  # nothing done in the handler itself
        loop.run_until_complete(asyncio.sleep(0.2))  # the loop does it: drain, log, then stop
        assert engine.draining
        assert server.should_exit
        assert any("SIGTERM: not ready" in line for line in blocking.records)
    finally:
        loop.close()


def test_a_signal_to_the_supervisor_is_noted_and_acted_on_by_its_loop(
    blocking: BlockingHandler,
) -> None:
    supervisor = Supervisor(Settings(workers=2), command=["true"])
    assert returns_while_logging_is_held(
        blocking, lambda: supervisor._on_signal(signal.SIGTERM, None)
    )
    assert supervisor._signals == [signal.SIGTERM]


def test_the_follower_stops_on_a_flag_a_signal_handler_sets_without_a_lock() -> None:
    stop = SignalStop()
    began = time.monotonic()
    assert not stop.wait(0.25)  # no signal: waits out its interval
    assert 0.2 <= time.monotonic() - began < 1.0
    threading.Timer(0.1, stop.set).start()  # the handler: one attribute, no lock
    began = time.monotonic()
    assert stop.wait(30)
    assert time.monotonic() - began < 1.0
    assert stop.is_set()
