"""Change notices: PostgreSQL tells listening servers the moment the catalog changes.

Every catalog change bumps the generation and, on PostgreSQL, sends ``NOTIFY pitstop_registry,
'<generation>'`` in the same transaction (delivered at commit, never for a rolled-back change).
A :class:`ChangeNotices` holds one extra connection per server that ``LISTEN``s on that channel
in its own thread and calls ``on_change`` for every notice, and also after every (re)connect,
since notices sent while it was away are lost: the caller then reads the registry to catch up.
Servers still poll, slowly, as a safety net; SQLite has no notices and is polled only.

The channel is per database, not per schema: registries in several schemas of one database
wake each other's servers, which then find their own generation unchanged (one cheap read).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

import psycopg
from sqlalchemy import make_url

log = logging.getLogger(__name__)

CHANNEL: Final = "pitstop_registry"
CHECK_S: Final = 0.5
"""How often the listening thread checks whether it should stop."""


def can_listen(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


class ChangeNotices:
    """A thread listening for catalog changes on PostgreSQL. ``on_change`` runs in that thread:
    keep it short (the manager's only sets an event on its loop)."""

    def __init__(self, url: str, on_change: Callable[[], None], retry_s: float = 1.0) -> None:
        parsed = make_url(url).set(drivername="postgresql")
        if "connect_timeout" not in parsed.query:
            parsed = parsed.update_query_dict({"connect_timeout": "5"})
        self._conninfo = parsed.render_as_string(hide_password=False)
        self._where = parsed.render_as_string(hide_password=True)
        self._on_change = on_change
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pitstop-notices", daemon=True)

    def start(self) -> ChangeNotices:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        lost = False
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    if lost:
                        log.info("listening for registry changes again on %s", self._where)
                    lost = False
                    self._notify()  # catch up on what was missed while not listening
                    while not self._stop.is_set():
                        for _notice in connection.notifies(timeout=CHECK_S):
                            self._notify()
            except psycopg.Error as exc:
                if not lost:
                    log.warning("registry change notices lost (%s); polling meanwhile", exc)
                lost = True
                self._stop.wait(self._retry_s)

    def _notify(self) -> None:
        try:
            self._on_change()
        except Exception:  # the loop it wakes may be closing; never kill the listener for it
            log.debug("change callback failed", exc_info=True)
