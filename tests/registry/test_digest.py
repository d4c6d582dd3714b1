"""Content digests: definition, stability, and verification messages."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pitstop.errors import ArtifactIntegrityError, InvalidInput
from pitstop.registry import FileEntry, digest_of, scan, verify


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for relpath, content in files.items():
        target = folder / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return folder


def test_digest_follows_the_documented_definition(tmp_path: Path) -> None:
    write(tmp_path, {"b.bin": b"bee", "a/z.txt": b"zed", "a.txt": b""})
    lines = "".join(
        f"{path}\0{hashlib.sha256(content).hexdigest()}\n"
        for path, content in sorted([("b.bin", b"bee"), ("a/z.txt", b"zed"), ("a.txt", b"")])
    )
    digest, entries = scan(tmp_path)
    assert digest == "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    assert [entry.path for entry in entries] == ["a.txt", "a/z.txt", "b.bin"]
    assert entries[2] == FileEntry("b.bin", hashlib.sha256(b"bee").hexdigest(), 3)


def test_digest_is_independent_of_order_and_metadata(tmp_path: Path) -> None:
    one = write(tmp_path / "one", {"x": b"1", "y/z": b"2"})
    two = write(tmp_path / "two", {"y/z": b"2", "x": b"1"})
    os.utime(two / "x", (1, 1))
    (two / "empty-folder").mkdir()
    digest_one, entries = scan(one)
    assert scan(two)[0] == digest_one
    assert digest_of(reversed(entries)) == digest_one


@pytest.mark.parametrize(
    "change",
    [
        {"x": b"changed"},  # content
        {"new": b""},  # an extra empty file counts
    ],
)
def test_any_change_changes_the_digest(tmp_path: Path, change: dict[str, bytes]) -> None:
    folder = write(tmp_path, {"x": b"1"})
    before = scan(folder)[0]
    write(folder, change)
    assert scan(folder)[0] != before


def test_renaming_changes_the_digest(tmp_path: Path) -> None:
    first = scan(write(tmp_path / "a", {"x": b"1"}))[0]
    assert scan(write(tmp_path / "b", {"y": b"1"}))[0] != first


def test_symlinks_are_refused_naming_the_path(tmp_path: Path) -> None:
    write(tmp_path, {"real": b"1"})
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InvalidInput, match="'sub/link' is a symbolic link"):
        scan(tmp_path)


def test_progress_reports_bytes_read_so_far(tmp_path: Path) -> None:
    write(tmp_path, {"big": b"x" * (2 * 1024 * 1024 + 5), "small": b"abc"})
    seen: list[int] = []
    scan(tmp_path, progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == 2 * 1024 * 1024 + 8
    assert len(seen) >= 3  # read in 1 MiB chunks


def test_verify_accepts_an_intact_folder(tmp_path: Path) -> None:
    folder = write(tmp_path, {"model.onnx": b"m", "sub/cfg": b"c"})
    digest, entries = scan(folder)
    verify(folder, digest, entries, label="fraud v3")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "model.onnx").write_bytes(b"M"), "artifact file 'model.onnx' of fraud v3 "
         "does not match its digest"),
        (lambda f: (f / "model.onnx").write_bytes(b"longer"), "'model.onnx' of fraud v3 does not"),
        (lambda f: (f / "sub" / "cfg").unlink(), "artifact file 'sub/cfg' of fraud v3 is missing"),
        (lambda f: (f / "x").write_bytes(b""), "unexpected file 'x' in the artifact of fraud v3"),
    ],
)  # fmt: skip
def test_verify_names_the_offending_file(tmp_path: Path, damage: object, message: str) -> None:
    folder = write(tmp_path, {"model.onnx": b"m", "sub/cfg": b"c"})
    digest, entries = scan(folder)
    damage(folder)  # type: ignore[operator]
    with pytest.raises(ArtifactIntegrityError, match=message):
        verify(folder, digest, entries, label="fraud v3")


def test_verify_refuses_entries_that_do_not_make_the_digest(tmp_path: Path) -> None:
    folder = write(tmp_path, {"a": b"1"})
    digest, _ = scan(folder)
    forged = (FileEntry("a", hashlib.sha256(b"2").hexdigest(), 1),)
    with pytest.raises(ArtifactIntegrityError, match="recorded file list of m v1"):
        verify(folder, digest, forged, label="m v1")
