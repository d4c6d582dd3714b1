"""The local content-addressed artifact store."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from pitstop.errors import ArtifactIntegrityError, InvalidInput
from pitstop.registry import LocalArtifactStore, scan


def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"weights")
    (folder / "sub" / "vocab.txt").write_bytes(b"a\nb\n")
    return folder


def test_put_stores_read_only_files_under_their_digest(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    folder = source(tmp_path)
    digest, entries = scan(folder)
    assert not store.has(digest)
    store.put(folder, digest, entries)
    assert store.has(digest)
    stored = store.local_path(digest)
    assert stored == tmp_path / "store" / "sha256" / digest.removeprefix("sha256:")
    assert scan(stored) == (digest, entries)
    mode = (stored / "model.onnx").stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    folder = source(tmp_path)
    digest, entries = scan(folder)
    store.put(folder, digest, entries)
    (folder / "model.onnx").write_bytes(b"changed after the first put")
    store.put(folder, digest, entries)  # already stored: the source is not read again
    assert scan(store.local_path(digest))[0] == digest


def test_put_refuses_a_source_that_changed_since_it_was_scanned(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    folder = source(tmp_path)
    digest, entries = scan(folder)
    (folder / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(
        InvalidInput, match=re.escape("'model.onnx' changed while it was being pushed")
    ):
        store.put(folder, digest, entries)
    assert not store.has(digest)
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_missing_artifact_and_delete(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    folder = source(tmp_path)
    digest, entries = scan(folder)
    with pytest.raises(ArtifactIntegrityError, match="missing from the store"):
        store.local_path(digest)
    store.put(folder, digest, entries)
    store.delete(digest)
    assert not store.has(digest)
    store.delete(digest)  # deleting twice is fine


def test_digests_are_checked(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(InvalidInput, match="not a sha256 digest"):
        store.has("sha256:../../etc")
