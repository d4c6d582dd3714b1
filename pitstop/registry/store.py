"""Artifact stores: where the files of each version live, addressed by their content digest.

:func:`open_store` picks one from ``PITSTOP_ARTIFACTS_URL``: ``file://<folder>`` (the default,
a :class:`LocalArtifactStore` under ``<home>/artifacts``) or ``s3://<bucket>/<prefix>`` (an
:class:`~pitstop.registry.s3_store.S3ArtifactStore` with a per-host
:class:`~pitstop.registry.artifact_cache.ArtifactCache`).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from pitstop.errors import ArtifactIntegrityError, InvalidInput
from pitstop.registry.digest import CHUNK_BYTES, FileEntry, digest_hex, digest_of, verify
from pitstop.registry.records import VersionRecord

log = logging.getLogger(__name__)


class ArtifactStore(Protocol):
    """Content-addressed, immutable storage of version folders.

    Contract:

    - An artifact is the set of files whose :func:`~pitstop.registry.digest.digest_of` is its
      digest. Once stored, it never changes; a store never hands out a partial artifact (writes
      land in a temporary place and appear atomically).
    - Construction is cheap and does no I/O beyond what the constructor's arguments imply.
    - Every method is blocking and may be called concurrently from several threads and
      processes, including two ``put`` of the same digest.
    - The store does not verify what it hands out; the registry re-verifies every file with
      :func:`~pitstop.registry.digest.verify` before a runtime reads it.
    """

    def has(self, digest: str) -> bool:
        """True when the artifact is fully stored."""
        ...

    def put(
        self,
        source: Path,
        digest: str,
        entries: Iterable[FileEntry],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Store the files ``entries`` names, read from the folder ``source``.

        Idempotent: returns at once when the artifact is already stored. Raises
        :class:`~pitstop.errors.InvalidInput` when a source file no longer matches its entry
        (it changed after it was hashed) or the entries do not make ``digest``, and
        :class:`~pitstop.errors.Unavailable` when a remote store cannot be reached.
        ``progress`` gets byte counts as they are stored (from any thread).
        """
        ...

    def local_path(self, digest: str) -> Path:
        """A local folder holding the artifact's files, to be treated as read-only.

        A remote store downloads into a local cache first. Raises
        :class:`~pitstop.errors.ArtifactIntegrityError` when the artifact is not stored (or a
        downloaded file does not match), :class:`~pitstop.errors.Unavailable` when a remote
        store cannot be reached.
        """
        ...

    def discard_local_copy(self, digest: str) -> bool:
        """Forget a local copy that failed verification, so that the next
        :meth:`local_path` fetches it again. False when there is nothing to fetch again from
        (the local store is its own copy)."""
        ...

    def delete(self, digest: str) -> None:
        """Remove the artifact if present (garbage collection). Callers make sure no version
        refers to it any more."""
        ...

    def trim_local_copies(self, keep: Collection[str]) -> None:
        """Bring a remote store's local cache within its bound, least recently used first,
        never removing the digests in ``keep``. Nothing to do for the local store."""
        ...


def checked_entries(digest: str, entries: Iterable[FileEntry]) -> tuple[FileEntry, ...]:
    """``entries`` as a tuple, when they make ``digest`` (what every store's ``put`` checks
    first); InvalidInput otherwise."""
    listed = tuple(entries)
    if digest_of(listed) != digest:
        raise InvalidInput(f"the file list does not make digest {digest}")
    return listed


class LocalArtifactStore:
    """An :class:`ArtifactStore` on a local (or shared POSIX) file system.

    Layout: ``<root>/sha256/<hex>/<files>``; temporary writes go to ``<root>/tmp`` on the same
    file system so that publishing is one atomic ``rename``. Stored files are made read-only to
    guard against accidental edits; tampering is still caught by verification.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _final(self, digest: str) -> Path:
        return self.root / "sha256" / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self._final(digest).is_dir()

    def put(
        self,
        source: Path,
        digest: str,
        entries: Iterable[FileEntry],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        entries = checked_entries(digest, entries)
        final = self._final(digest)
        if final.is_dir():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = self.root / "tmp" / f"{digest_hex(digest)}.{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            for entry in entries:
                copy_checked(source, staging, entry, progress)
            try:
                os.rename(staging, final)
            except OSError as exc:
                # Another writer published the same digest first; its copy is as good as ours.
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
                    raise
        finally:
            if staging.exists():
                _remove_tree(staging)

    def local_path(self, digest: str) -> Path:
        final = self._final(digest)
        if not final.is_dir():
            raise ArtifactIntegrityError(f"artifact {digest} is missing from the store {self.root}")
        return final

    def discard_local_copy(self, digest: str) -> bool:
        return False

    def trim_local_copies(self, keep: Collection[str]) -> None:
        return None

    def delete(self, digest: str) -> None:
        final = self._final(digest)
        if not final.exists():
            return
        # Move it aside first so that readers never see a half-deleted artifact.
        doomed = self.root / "tmp" / f"{digest_hex(digest)}.deleted.{uuid.uuid4().hex}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, doomed)
        _remove_tree(doomed)


def copy_checked(
    source: Path, staging: Path, entry: FileEntry, progress: Callable[[int], None] | None = None
) -> None:
    """Copy one file and check the copy: the source may have changed since it was scanned."""
    relative = Path(*entry.path.split("/"))
    target = staging / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    origin = source / relative
    if origin.is_symlink() or not origin.is_file():
        raise InvalidInput(f"file {entry.path!r} disappeared from {source} while pushing")
    # Hash what we write rather than what we scanned: that is what later reads will see.
    hasher = hashlib.sha256()
    with origin.open("rb") as reader, target.open("xb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            hasher.update(chunk)
            writer.write(chunk)
            if progress is not None:
                progress(len(chunk))
    if hasher.hexdigest() != entry.sha256:
        raise InvalidInput(f"file {entry.path!r} changed while it was being pushed; push again")
    os.chmod(target, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def _remove_tree(path: Path) -> None:
    # Read-only files are removable on POSIX because their folders stay writable.
    shutil.rmtree(path)


def open_store(
    artifacts_url: str | None,
    artifact_root: Path,
    cache_root: Path,
    cache_max_bytes: int,
    s3_addressing_style: str = "auto",
) -> ArtifactStore:
    """The store ``artifacts_url`` names (None: the local store under ``artifact_root``).
    InvalidInput naming ``PITSTOP_ARTIFACTS_URL`` for anything else."""
    if not artifacts_url:
        return LocalArtifactStore(artifact_root)
    parts = urlsplit(artifacts_url)
    if parts.scheme == "file" and not parts.netloc and parts.path:
        return LocalArtifactStore(Path(unquote(parts.path)))
    if parts.scheme == "s3" and parts.netloc and not parts.query and not parts.fragment:
        from pitstop.registry.artifact_cache import ArtifactCache
        from pitstop.registry.s3_store import S3ArtifactStore

        return S3ArtifactStore(
            parts.netloc,
            unquote(parts.path),
            ArtifactCache(cache_root, cache_max_bytes),
            addressing_style=s3_addressing_style,
        )
    raise InvalidInput(
        f"PITSTOP_ARTIFACTS_URL: expected file:///<folder> or s3://<bucket>[/<prefix>], "
        f"got {artifacts_url!r}"
    )


def fetch_verified(
    store: ArtifactStore, record: VersionRecord, progress: Callable[[int], None] | None = None
) -> Path:
    """``record``'s files from ``store``, each re-verified against its digest; a remote store's
    local copy that fails verification is discarded and fetched once more."""
    folder = store.local_path(record.digest)
    try:
        verify(folder, record.digest, record.files, label=record.label, progress=progress)
    except ArtifactIntegrityError:
        # A remote store's local copy went bad (disk, tampering on the host): fetch it again,
        # verified on the way in, and verify once more.
        if not store.discard_local_copy(record.digest):
            raise
        log.warning("local copy of %s failed verification; downloading it again", record.label)
        folder = store.local_path(record.digest)
        verify(folder, record.digest, record.files, label=record.label, progress=progress)
    return folder


def stored_progress(progress: Callable[[int, int], None], total: int) -> Callable[[int], None]:
    """The second half of a push's progress: bytes stored, counted from any thread."""
    lock = threading.Lock()
    stored = 0

    def on_bytes(count: int) -> None:
        nonlocal stored
        with lock:
            stored += count
            done = stored
        progress(total + done, 2 * total)

    return on_bytes
