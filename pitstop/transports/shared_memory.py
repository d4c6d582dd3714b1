"""The system shared-memory extension: regions of POSIX shared memory that clients on this host
register by name, so inputs and outputs travel through memory rather than the socket.

A region is ``byte_size`` bytes at ``offset`` in the shared-memory object ``key`` (a
``shm_open`` name such as ``/input_simple``, which Linux keeps as ``/dev/shm/input_simple``).
Registering maps it, after checking that the object is a regular file owned by this server's
user (never a link, never another user's memory) and at least ``offset + byte_size`` long.
Every reference an inference request makes is checked against the registered size before a
byte is read or written: an offset or size outside the region is refused, never followed.
Inputs are copied out of the region before the model runs (a client rewriting it meanwhile
cannot change a request in flight, and unregistering never waits for one); outputs are written
into it after.

With ``--workers N`` the regions are kept in a table every worker of the server reads (a JSON
file in the workers' shared folder, changed under a file lock), so a region registered through
one worker's connection is usable through any other's; each worker maps it on first use.

The CUDA shared-memory extension is answered too: there is no GPU here, so registering a CUDA
region is refused saying so, its status lists nothing and unregistering is a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import orjson

from pitstop.errors import InvalidInput, NotFound
from pitstop.protocol.shared_memory import SharedRef

SHM_ROOT: Final = Path("/dev/shm")
MAX_REGIONS: Final = 1024
"""Most regions registered at once (each holds a mapping and a table row)."""

_KEY: Final = re.compile(r"/[^/\x00]{1,250}")
_NAME: Final = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
NO_GPU: Final = (
    "CUDA shared memory is not available: this server has no GPU (use system shared memory)"
)


@dataclass(frozen=True, slots=True)
class Region:
    """One registered region, as the status endpoints report it."""

    name: str
    key: str
    offset: int
    byte_size: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class SharedMemory:
    """The registered regions of one server (all its workers when ``table`` is given).

    Contract: :meth:`register` raises InvalidInput (bad name, key, offset or size; a name
    already registered; an object that is missing, not a regular file, not this user's, or
    too small) and leaves nothing registered; :meth:`unregister` of an unknown name raises
    NotFound; :meth:`read` and :meth:`write` raise InvalidInput for an unknown region or a
    reference outside it, naming ``where``. Every call is quick and runs on the event loop: the
    objects live in memory (tmpfs), the table's lock is held only for a read-modify-write of a
    small file, and inference calls add a ``stat`` of the table at most to their memcpy."""

    def __init__(self, table: Path | None = None, root: Path = SHM_ROOT) -> None:
        self._table = table
        self._root = root
        self._regions: dict[str, Region] = {}
        self._maps: dict[str, mmap.mmap] = {}
        self._seen: tuple[int, int] | None = None  # the table's (inode, mtime) last read

    # -- the extension's three calls ------------------------------------------------------

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidInput("name must be 1 to 256 printable characters")
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InvalidInput(
                f"key {key!r}: a shared-memory key is '/' then 1 to 250 characters, no '/'"
            )
        for field, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"{field} must be a non-negative integer, got {value!r}")
        if byte_size == 0:
            raise InvalidInput("byte_size must be at least 1")
        region = Region(name, key, offset, byte_size)
        with self._locked():
            self._sync()
            if name in self._regions:
                raise InvalidInput(
                    f"shared memory region {name!r} already in manager (it is registered; "
                    "unregister it first)"
                )
            if len(self._regions) >= MAX_REGIONS:
                raise InvalidInput(
                    f"{MAX_REGIONS} shared memory regions are registered; unregister one first"
                )
            self._maps[name] = self._map(region)
            self._regions[name] = region
            self._save()

    def unregister(self, name: str | None) -> None:
        """Unregister ``name``, or every region when None."""
        with self._locked():
            self._sync()
            if name is not None and name not in self._regions:
                raise NotFound(f"no shared memory region {name!r} is registered")
            for gone in [name] if name is not None else list(self._regions):
                self._regions.pop(gone, None)
                self._close(gone)
            self._save()

    def status(self, name: str | None) -> list[Region]:
        self._sync()
        if name is None:
            return sorted(self._regions.values(), key=lambda region: region.name)
        if name not in self._regions:
            raise NotFound(f"no shared memory region {name!r} is registered")
        return [self._regions[name]]

    # -- inference ------------------------------------------------------------------------

    def check(self, ref: SharedRef, where: str) -> None:
        """Raise as :meth:`read` would for ``ref``, reading nothing."""
        self._span(ref, where)

    def read(self, ref: SharedRef, where: str) -> bytes:
        """A copy of the bytes ``ref`` names."""
        start, view = self._span(ref, where)
        return view[start : start + ref.byte_size]

    def write(self, ref: SharedRef, data: bytes, where: str) -> None:
        """Write ``data`` at the start of what ``ref`` names (it must fit ``ref.byte_size``)."""
        if len(data) > ref.byte_size:
            raise InvalidInput(
                f"shared memory size specified with the request for {where} ({ref.byte_size} "
                f"bytes) should be at least {len(data)} bytes to hold the results"
            )
        start, view = self._span(ref, where)
        view[start : start + len(data)] = data

    def close(self) -> None:
        for name in list(self._maps):
            self._close(name)

    # -- internals ------------------------------------------------------------------------

    def _span(self, ref: SharedRef, where: str) -> tuple[int, mmap.mmap]:
        self._sync()
        region = self._regions.get(ref.region)
        if region is None:
            raise InvalidInput(
                f"Unable to find shared memory region: {ref.region!r} ({where} names it; it is "
                "not registered)"
            )
        if ref.offset + ref.byte_size > region.byte_size:
            raise InvalidInput(
                f"Invalid offset + byte size for shared memory region: {ref.region!r} ({where}: "
                f"shared_memory_offset {ref.offset} + shared_memory_byte_size {ref.byte_size} "
                f"is outside the region's {region.byte_size} bytes)"
            )
        mapped = self._maps.get(ref.region)
        if mapped is None:
            mapped = self._maps[ref.region] = self._map(region)
        return region.offset + ref.offset, mapped

    def _map(self, region: Region) -> mmap.mmap:
        path = self._root / region.key[1:]
        where = f"shared memory region {region.name!r} (key {region.key!r})"
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidInput(f"{where}: no shared memory object of that key") from None
        except OSError as exc:
            raise InvalidInput(f"{where}: cannot be opened: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"{where}: not a shared memory object")
            if info.st_uid != os.geteuid():
                raise InvalidInput(f"{where}: belongs to another user than this server's")
            end = region.offset + region.byte_size
            if info.st_size < end:
                raise InvalidInput(
                    f"{where}: offset {region.offset} + byte_size {region.byte_size} is past "
                    f"the object's {info.st_size} bytes"
                )
            return mmap.mmap(fd, end, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def _close(self, name: str) -> None:
        mapped = self._maps.pop(name, None)
        if mapped is not None:
            mapped.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._table is None:
            yield
            return
        with open(self._table.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _sync(self) -> None:
        """Read the shared table when another worker changed it since the last read."""
        if self._table is None:
            return
        try:
            info = self._table.stat()
        except FileNotFoundError:
            seen = None
            rows: list[dict[str, object]] = []
        else:
            seen = (info.st_ino, info.st_mtime_ns)
            if seen == self._seen:
                return
            rows = orjson.loads(self._table.read_bytes())
        regions = {str(row["name"]): Region(**row) for row in rows}  # type: ignore[arg-type]
        for name in list(self._maps):
            if regions.get(name) != self._regions.get(name):
                self._close(name)
        self._regions = regions
        self._seen = seen

    def _save(self) -> None:
        if self._table is None:
            return
        rows = [region.to_json() for region in self._regions.values()]
        scratch = self._table.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_bytes(orjson.dumps(rows))
        os.replace(scratch, self._table)
        info = self._table.stat()
        self._seen = (info.st_ino, info.st_mtime_ns)


def cuda_register() -> None:
    """Registering CUDA shared memory: always refused here (400: the request asks for what this
    server has not got, as a CPU-only Triton answers)."""
    raise InvalidInput(NO_GPU)
