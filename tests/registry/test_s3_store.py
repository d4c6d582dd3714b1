"""Artifacts in a real S3-compatible server (SeaweedFS on 127.0.0.1): pushed from one host,
fetched and verified on another through its own cache, tampering refused naming the file, an
unreachable store reported as Unavailable, and the per-host cache bounded."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.errors import ArtifactIntegrityError, InvalidInput, Unavailable
from pitstop.registry import LocalArtifactStore, Registry, scan
from pitstop.registry.artifact_cache import ArtifactCache
from pitstop.registry.s3_store import S3ArtifactStore
from pitstop.registry.store import open_store
from tests.registry.conftest import MakePackage
from tests.s3_server import Proxy, S3Server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("weed")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    """One bucket (each is a SeaweedFS collection with volumes of its own); a prefix per test."""
    s3.client().create_bucket(Bucket="models")
    return "models"


@pytest.fixture
def prefix() -> str:
    return f"team-{uuid.uuid4().hex[:8]}/models"


def host(
    s3: S3Server, bucket: str, prefix: str, cache: Path, endpoint: str | None = None
) -> S3ArtifactStore:
    """The store as one host sees it: the shared bucket and prefix, its own cache."""
    return S3ArtifactStore(
        bucket, prefix, ArtifactCache(cache, 1 << 30), client=s3.client(endpoint)
    )


def test_pushed_on_one_host_and_fetched_verified_on_another(
    db_url: str, s3: S3Server, bucket: str, prefix: str, make_package: MakePackage, tmp_path: Path
) -> None:
    folder = make_package(files={"model.onnx": os.urandom(300_000), "vocab/words.txt": b"a\nb\n"})
    pushed: list[int] = []
    with Registry.open(db_url, store=host(s3, bucket, prefix, tmp_path / "a")) as first:
        result = first.push(
            folder, name="m", actor="ci", progress=lambda done, total: pushed.append(done)
        )
    total = 300_000 + 4 + (folder / "pitstop.yaml").stat().st_size
    assert pushed[-1] == 2 * total  # hashed, then uploaded
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    keys = {o["Key"] for o in listed}
    hex_ = result.version.digest.removeprefix("sha256:")
    assert f"{prefix}/sha256/{hex_}/artifact.json" in keys
    assert f"{prefix}/sha256/{hex_}/files/vocab/words.txt" in keys
    with Registry.open(db_url, store=host(s3, bucket, prefix, tmp_path / "b")) as second:
        fetched = second.fetch(second.version("m", result.version.number))
    assert fetched.is_relative_to(tmp_path / "b")
    assert scan(fetched) == scan(folder)


def test_a_tampered_object_is_refused_before_use_naming_the_file(
    s3: S3Server, bucket: str, prefix: str, make_package: MakePackage, tmp_path: Path
) -> None:
    folder = make_package()
    digest, entries = scan(folder)
    host(s3, bucket, prefix, tmp_path / "a").put(folder, digest, entries)
    key = f"{prefix}/sha256/{digest.removeprefix('sha256:')}/files/model.onnx"
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"evil weights")
    other = host(s3, bucket, prefix, tmp_path / "b")
    with pytest.raises(ArtifactIntegrityError, match=r"'model\.onnx'.*changed in the store"):
        other.local_path(digest)
    assert other.cache.lookup(digest) is None  # nothing half-trusted is left in the cache
    assert list((tmp_path / "b" / "tmp").iterdir()) == []


def test_a_corrupted_cache_entry_is_downloaded_again(
    s3: S3Server, bucket: str, prefix: str, make_package: MakePackage, tmp_path: Path
) -> None:
    folder = make_package()
    store = host(s3, bucket, prefix, tmp_path / "cache")
    with Registry.open(f"sqlite:///{tmp_path / 'r.db'}", store=store) as registry:
        version = registry.push(folder, name="m", actor="ci").version
        cached = registry.fetch(version) / "model.onnx"
        cached.chmod(0o644)
        cached.write_bytes(b"bit rot")
        again = registry.fetch(version)
    assert (again / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()


def test_an_interrupted_push_is_invisible_and_a_missing_artifact_is_named(
    s3: S3Server, bucket: str, prefix: str, make_package: MakePackage, tmp_path: Path
) -> None:
    folder = make_package()
    digest, entries = scan(folder)
    store = host(s3, bucket, prefix, tmp_path / "a")
    store.put(folder, digest, entries)
    marker = f"{prefix}/sha256/{digest.removeprefix('sha256:')}/artifact.json"
    s3.client().delete_object(Bucket=bucket, Key=marker)  # files there, list never written
    other = host(s3, bucket, prefix, tmp_path / "b")
    assert not other.has(digest)
    with pytest.raises(ArtifactIntegrityError, match="missing from the store s3://"):
        other.local_path(digest)
    store.put(folder, digest, entries)  # pushing again completes it
    assert other.has(digest)
    store.delete(digest)
    assert not other.has(digest)


def test_an_unreachable_store_is_unavailable_naming_it_then_recovers(
    s3: S3Server, bucket: str, prefix: str, make_package: MakePackage, tmp_path: Path
) -> None:
    folder = make_package()
    digest, entries = scan(folder)
    proxy = Proxy(s3.port)
    try:
        store = host(s3, bucket, prefix, tmp_path / "a", endpoint=proxy.url)
        proxy.cut()
        with pytest.raises(Unavailable, match=f"artifact store s3://{bucket}/{prefix} unreach"):
            store.put(folder, digest, entries)
        with pytest.raises(Unavailable, match="unreachable"):
            host(s3, bucket, prefix, tmp_path / "b", endpoint=proxy.url).local_path(digest)
        proxy.restore()
        store.put(folder, digest, entries)
        assert (
            host(s3, bucket, prefix, tmp_path / "c", endpoint=proxy.url).local_path(digest).is_dir()
        )
    finally:
        proxy.close()


def test_the_cache_drops_least_recently_used_artifacts_nobody_serves(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", max_bytes=2500)
    digests = [f"sha256:{n:064x}" for n in range(4)]
    for age, digest in enumerate(digests):
        staged = cache.staging(digest)
        (staged / "w").write_bytes(b"x" * 1000)
        entry = cache.install(digest, staged)
        os.utime(entry, (1_000_000 + age, 1_000_000 + age))
    assert cache.lookup(digests[0]) is not None  # used now: the most recent
    # Oldest first: 1 (kept: it serves), 2, 3, then 0; 4000 bytes must come down to 2500.
    assert cache.trim(keep={digests[1]}) == [digests[2], digests[3]]
    assert [d for d in digests if cache.lookup(d) is not None] == [digests[0], digests[1]]
    cache.max_bytes = 0
    assert cache.trim(keep=set(digests)) == []  # over the bound, but everything is in use


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (None, LocalArtifactStore),
        ("file:///srv/artifacts", LocalArtifactStore),
        ("s3://bucket", S3ArtifactStore),
        ("s3://bucket/some/prefix", S3ArtifactStore),
        ("gs://bucket/prefix", None),
        ("s3:///no-bucket", None),
        ("file://host/path", None),
        ("/srv/artifacts", None),
    ],
)
def test_the_artifacts_url_picks_the_store(
    url: str | None, kind: type | None, tmp_path: Path
) -> None:
    if kind is None:
        with pytest.raises(InvalidInput, match="PITSTOP_ARTIFACTS_URL"):
            open_store(url, tmp_path, tmp_path / "cache", 1 << 30)
        return
    store = open_store(url, tmp_path / "local", tmp_path / "cache", 1 << 30)
    assert isinstance(store, kind)
    if isinstance(store, S3ArtifactStore):
        assert store.url == url
