"""Where request counters live: numbers one process updates and any worker of the server can sum.

A :class:`Tally` hands out small numpy arrays ("cells") by key; the recorders behind ``/metrics``
and the statistics endpoint keep their counts and histogram buckets in them, so updating one
is an in-place addition, as before. One process alone uses a :class:`MemoryTally`. The workers
of ``pitstop serve --workers N`` each write a :class:`FileTally` into one folder the supervisor
made: the cells are a memory-mapped file, so every update is in the page cache the moment it is
made and survives the worker being killed (``kill -9`` loses nothing it had counted), and
:func:`gather` sums the files of every worker, live or dead, into a MemoryTally that the
scraping worker answers from. This is prometheus_client's multiprocess design (one mmap file
per process, merged at scrape), applied to our own recorders.

Keys are tuples of str/int/None, stored as JSON. Each cell has a kind: ``sum`` (int64 counts),
``total`` (float64 sums), ``latest`` (int64, merged by taking the largest, for timestamps) or
``live`` (int64 gauges, zeroed when their worker exits).
A FileTally has a fixed capacity (:data:`CAPACITY_BYTES`); past it, new cells live in memory
only (logged once): counted by this worker, missing from the sum, never an error.
"""

from __future__ import annotations

import enum
import logging
import mmap
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np
import orjson

log = logging.getLogger(__name__)

Key = tuple[str | int | None, ...]

CAPACITY_BYTES: Final = 8 << 20
"""Cells one worker may write to its file (1 Mi cells of 8 bytes; the file is sparse)."""
CELLS: Final = ".cells"
KEYS: Final = ".keys"


class Kind(enum.Enum):
    SUM = "sum"
    """int64 counts, added across workers."""
    TOTAL = "total"
    """float64 sums (seconds), added across workers."""
    LATEST = "latest"
    """int64 timestamps: the largest across workers."""
    LIVE = "live"
    """int64 gauges of what a worker holds now (requests in flight): added across workers;
    zeroed by :func:`retire` when the worker exits, so a dead worker adds nothing."""

    @property
    def dtype(self) -> type[np.generic]:
        return np.float64 if self is Kind.TOTAL else np.int64


class Tally:
    """Cells by key. :meth:`cells` returns the same array for the same key every time."""

    def __init__(self) -> None:
        self._cells: dict[Key, tuple[Kind, np.ndarray]] = {}

    def cells(self, key: Key, size: int = 1, kind: Kind = Kind.SUM) -> np.ndarray:
        """The ``size`` cells of ``key``, zero when new. Raises ValueError when ``key`` exists
        with another size or kind."""
        found = self._cells.get(key)
        if found is None:
            array = self._allocate(key, size, kind)
            self._cells[key] = (kind, array)
            return array
        had, array = found
        if had is not kind or len(array) != size:
            raise ValueError(f"{key!r} has {len(array)} {had.value} cells, not {size} {kind.value}")
        return array

    def __iter__(self) -> Iterator[Key]:
        """The keys of every cell handed out (a copy: cells may be added meanwhile)."""
        return iter(list(self._cells))

    def _allocate(self, key: Key, size: int, kind: Kind) -> np.ndarray:
        return np.zeros(size, dtype=kind.dtype)

    def add(self, key: Key, kind: Kind, values: np.ndarray) -> None:
        """Merge ``values`` into ``key``'s cells (added, or the largest for LATEST)."""
        cells = self.cells(key, len(values), kind)
        if kind is Kind.LATEST:
            np.maximum(cells, values, out=cells)
        else:
            cells += values


MemoryTally = Tally
"""One process's cells, in its own memory."""


class FileTally(Tally):
    """This worker's cells in ``folder/<name>.cells`` (memory-mapped) and their keys in
    ``folder/<name>.keys`` (one JSON line per key, written before its cells are used)."""

    def __init__(self, folder: Path, name: str, capacity: int = CAPACITY_BYTES) -> None:
        super().__init__()
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / (name + CELLS), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, capacity)
            self._map = mmap.mmap(fd, capacity)
        finally:
            os.close(fd)
        self._keys = os.open(
            folder / (name + KEYS), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600
        )
        self._used = 0
        self._full = False

    def _allocate(self, key: Key, size: int, kind: Kind) -> np.ndarray:
        need = size * 8
        if self._used + need > len(self._map):
            if not self._full:
                log.warning("the worker's counter file is full: new series are not shared")
                self._full = True
            return super()._allocate(key, size, kind)
        offset, self._used = self._used, self._used + need
        line = orjson.dumps({"key": list(key), "at": offset, "size": size, "kind": kind.value})
        os.write(self._keys, line + b"\n")
        return np.frombuffer(self._map, dtype=kind.dtype, count=size, offset=offset)


def gather(folder: Path) -> Tally:
    """The sum of every worker's cells in ``folder`` (a worker that died still counts). A line
    being written, or a key whose size or kind differs between workers, is skipped."""
    merged = Tally()
    for keys in sorted(folder.glob("*" + KEYS)):
        try:
            entries = [_entry(line) for line in keys.read_bytes().split(b"\n")]
            found = [entry for entry in entries if entry is not None]
            end = max((at + size * 8 for _key, at, size, _kind in found), default=0)
            with keys.with_suffix(CELLS).open("rb") as cells:
                data = cells.read(end)  # only what is in use: the file is sparse
        except FileNotFoundError:
            continue  # a worker's files removed while we read
        for key, at, size, kind in found:
            if at + size * 8 > len(data):
                continue
            try:
                merged.add(key, kind, np.frombuffer(data, dtype=kind.dtype, count=size, offset=at))
            except ValueError:
                continue
    return merged


def _entry(line: bytes) -> tuple[Key, int, int, Kind] | None:
    """One line of a keys file, or None for the empty last line or one being written."""
    try:
        entry = orjson.loads(line)
        key, at, size = tuple(entry["key"]), int(entry["at"]), int(entry["size"])
        kind = Kind(entry["kind"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if at < 0 or at % 8 or size < 1:
        return None
    return key, at, size, kind


def file_name(pid: int) -> str:
    """A worker's file name: its pid and a random part, so a reused pid never reopens (and
    truncates) the counts of the dead worker that had it."""
    return f"{pid}-{uuid.uuid4().hex[:8]}"


def retire(folder: Path, pid: int) -> None:
    """Zero the LIVE cells of the worker ``pid`` (it exited): its gauges stop counting, its
    counters stay. Called by the supervisor; a worker that never wrote is skipped."""
    for keys in folder.glob(f"{pid}-*{KEYS}"):
        _retire(folder, keys.name[: -len(KEYS)])


def _retire(folder: Path, name: str) -> None:
    keys = folder / (name + KEYS)
    try:
        entries = [_entry(line) for line in keys.read_bytes().split(b"\n")]
        with (folder / (name + CELLS)).open("r+b") as cells:
            size = os.fstat(cells.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(cells.fileno(), size) as mapped:
                for entry in entries:
                    if entry is not None and entry[3] is Kind.LIVE:
                        _key, at, count, _kind = entry
                        if at + count * 8 <= size:
                            mapped[at : at + count * 8] = bytes(count * 8)
    except FileNotFoundError:
        return
