"""Content digests of model folders: what makes a version immutable and verifiable.

The digest of a folder is defined as follows (and nothing else goes into it):

1. Take every regular file under the folder, recursively. Symbolic links and other non-regular
   entries are refused (:class:`~pitstop.errors.InvalidInput` naming the path): a link could
   point outside the folder and change without the folder changing. Empty folders carry no
   content and are ignored.
2. For each file, ``relpath`` is its path relative to the folder with ``/`` separators, and
   ``file_sha256`` is the lowercase hex sha256 of its bytes.
3. Sort the files by ``relpath`` (by code point, which is the same as by UTF-8 bytes) and
   concatenate the lines ``f"{relpath}\\0{file_sha256}\\n"``, encoded as UTF-8.
4. The digest is ``"sha256:"`` followed by the lowercase hex sha256 of that text.

Renaming, adding or removing a file, or changing one byte, changes the digest; file timestamps
and permissions do not.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pitstop.errors import ArtifactIntegrityError, InvalidInput

CHUNK_BYTES: Final = 1024 * 1024
"""Files are read in chunks of this size, so memory use does not grow with the model."""

DIGEST_PREFIX: Final = "sha256:"


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: POSIX path relative to the folder, hex sha256, size in bytes."""

    path: str
    sha256: str
    size: int


def digest_of(entries: Iterable[FileEntry]) -> str:
    """The folder digest of these file entries (order does not matter; see the module docstring)."""
    hasher = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        hasher.update(f"{entry.path}\0{entry.sha256}\n".encode())
    return DIGEST_PREFIX + hasher.hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; :class:`InvalidInput` if it is not one."""
    hex_part = digest.removeprefix(DIGEST_PREFIX)
    if (
        not digest.startswith(DIGEST_PREFIX)
        or len(hex_part) != 64
        or any(c not in "0123456789abcdef" for c in hex_part)
    ):
        raise InvalidInput(f"not a sha256 digest: {digest!r}")
    return hex_part


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of one file, read in :data:`CHUNK_BYTES` chunks; ``on_bytes(n)`` per chunk."""
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            hasher.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return hasher.hexdigest()


def list_files(folder: Path) -> list[tuple[str, Path, int]]:
    """``(relpath, path, size)`` of every regular file under ``folder``, sorted by relpath.

    Raises :class:`InvalidInput` when ``folder`` is not a directory, or names the first symbolic
    link or special file found.
    """
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    found: list[tuple[str, Path, int]] = []
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as listing:
            for item in listing:
                path = Path(item.path)
                relpath = path.relative_to(folder).as_posix()
                info = item.stat(follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    raise InvalidInput(
                        f"{relpath!r} is a symbolic link; model folders must hold real files"
                    )
                if stat.S_ISDIR(info.st_mode):
                    pending.append(path)
                elif stat.S_ISREG(info.st_mode):
                    _check_encodable(relpath)
                    found.append((relpath, path, info.st_size))
                else:
                    raise InvalidInput(f"{relpath!r} is not a regular file")
    found.sort(key=lambda item: item[0])
    return found


def scan(
    folder: Path, progress: Callable[[int], None] | None = None
) -> tuple[str, tuple[FileEntry, ...]]:
    """Hash every file under ``folder``: ``(digest, entries sorted by path)``.

    ``progress``, when given, is called with the total number of bytes read so far (for a
    progress bar). Raises :class:`InvalidInput` for symbolic links and special files.
    """
    read_so_far = 0

    def on_bytes(count: int) -> None:
        nonlocal read_so_far
        read_so_far += count
        if progress is not None:
            progress(read_so_far)

    entries = tuple(
        FileEntry(relpath, file_sha256(path, on_bytes), size)
        for relpath, path, size in list_files(folder)
    )
    return digest_of(entries), entries


def verify(
    folder: Path,
    expected_digest: str,
    expected_entries: Iterable[FileEntry],
    *,
    label: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Check that ``folder`` holds exactly ``expected_entries`` and that they make the digest.

    ``label`` names the version in messages (``"fraud v3"``). Raises
    :class:`~pitstop.errors.ArtifactIntegrityError` naming the first offending file: one that
    is missing, unexpected, or whose bytes differ. Never returns on a mismatch, so a caller can
    deserialise the files right after it returns.
    """
    expected = {entry.path: entry for entry in expected_entries}
    if digest_of(expected.values()) != expected_digest:
        raise ArtifactIntegrityError(
            f"the recorded file list of {label} does not match its digest {expected_digest}"
        )
    try:
        present = list_files(folder)
    except InvalidInput as exc:
        raise ArtifactIntegrityError(f"stored files of {label}: {exc}") from exc
    present_paths = {relpath for relpath, _, _ in present}
    missing = sorted(expected.keys() - present_paths)
    if missing:
        raise ArtifactIntegrityError(f"artifact file {missing[0]!r} of {label} is missing")
    unexpected = sorted(present_paths - expected.keys())
    if unexpected:
        raise ArtifactIntegrityError(
            f"unexpected file {unexpected[0]!r} in the artifact of {label}"
        )
    read_so_far = 0

    def on_bytes(count: int) -> None:
        nonlocal read_so_far
        read_so_far += count
        if progress is not None:
            progress(read_so_far)

    for relpath, path, size in present:
        entry = expected[relpath]
        # The size check is free and catches truncation without reading the file.
        if size != entry.size or file_sha256(path, on_bytes) != entry.sha256:
            raise ArtifactIntegrityError(
                f"artifact file {relpath!r} of {label} does not match its digest"
            )


def _check_encodable(relpath: str) -> None:
    try:
        relpath.encode()
    except UnicodeEncodeError:
        raise InvalidInput(f"file name {relpath!r} is not valid UTF-8") from None
