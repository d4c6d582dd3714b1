"""The per-host cache of a remote artifact store: verified copies of artifacts, by digest.

Layout under the cache folder: ``sha256/<hex>/<files>`` (complete, verified artifacts),
``tmp/`` (downloads in progress, on the same file system so publishing is one atomic
``rename``) and ``locks/<hex>.lock`` (one ``flock`` per digest, so the workers of one host
download an artifact once: the first takes the lock and downloads, the others wait and find it
done). An entry's modification time is bumped on every use; :meth:`ArtifactCache.trim` removes
the least recently used entries nobody serves until the cache fits ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path

from pitstop.registry.digest import digest_hex

log = logging.getLogger(__name__)


class ArtifactCache:
    """Verified local copies of remote artifacts, shared by every process on the host."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def entry(self, digest: str) -> Path:
        return self.root / "sha256" / digest_hex(digest)

    def lookup(self, digest: str) -> Path | None:
        """The cached copy of ``digest`` (marked as used now), or None."""
        path = self.entry(digest)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    @contextlib.contextmanager
    def locked(self, digest: str) -> Iterator[None]:
        """Hold the host-wide lock of ``digest`` (blocking) while filling its entry."""
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / f"{digest_hex(digest)}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def staging(self, digest: str) -> Path:
        """A new empty folder to fill, then hand to :meth:`install` (or remove)."""
        folder = self.root / "tmp" / f"{digest_hex(digest)}.{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        return folder

    def install(self, digest: str, staged: Path) -> Path:
        """Publish a filled staging folder as the entry of ``digest`` in one rename. When
        another process published it first, its copy stays and ``staged`` is removed."""
        final = self.entry(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
                raise
            remove_tree(staged)
        return final

    def discard(self, digest: str) -> bool:
        """Drop the entry of ``digest`` (a corrupted copy); True when there was one."""
        final = self.entry(digest)
        if not final.exists():
            return False
        doomed = self.root / "tmp" / f"{digest_hex(digest)}.discarded.{uuid.uuid4().hex}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(final, doomed)
        except FileNotFoundError:
            return False
        remove_tree(doomed)
        return True

    def trim(self, keep: Collection[str]) -> list[str]:
        """Remove least recently used entries whose digest is not in ``keep`` until the cache
        holds at most ``max_bytes``; returns the digests removed."""
        entries = []
        for path in (self.root / "sha256").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                entries.append((path.stat().st_mtime, f"sha256:{path.name}", _size(path)))
        total = sum(size for _, _, size in entries)
        removed = []
        for _, digest, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if digest in keep:
                continue
            if self.discard(digest):
                total -= size
                removed.append(digest)
        if total > self.max_bytes:
            log.warning(
                "artifact cache %s holds %d bytes, over its %d-byte bound, all in use",
                self.root, total, self.max_bytes,
            )  # fmt: skip
        return removed


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def remove_tree(path: Path) -> None:
    # Read-only files are removable on POSIX because their folders stay writable.
    shutil.rmtree(path, ignore_errors=True)
