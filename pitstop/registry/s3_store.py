"""An :class:`~pitstop.registry.store.ArtifactStore` in S3 or an S3-compatible object store
(MinIO, SeaweedFS, Ceph RGW, R2, ...): the only module that imports boto3.

Why boto3: it is the AWS SDK, so the whole credential chain works as operators expect
(environment, shared config and profiles, SSO, web identity / IRSA on Kubernetes, ECS and EC2
instance roles), as do the standard ``AWS_*`` variables (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` for an S3-compatible server, ``AWS_REGION``); its transfer manager does
multipart uploads and downloads with a progress callback; MLflow and KServe's storage
initializer use it too. obstore (GCS and Azure through one interface) was the other candidate;
its credential chain does not read AWS profiles or SSO, and its API is pre-1.0. Checksums are
computed and validated "when required" only: recent boto3 releases otherwise send CRC
trailers that many S3-compatible stores reject. ETags are not checksums (multipart ETags are
not even an MD5 of the object): integrity is pitstop's own sha256, computed before upload,
stored beside the files, and checked on every download before anything reads the files.

Layout under ``s3://<bucket>/<prefix>``::

    sha256/<hex>/files/<relative path>   each file of the artifact
    sha256/<hex>/artifact.json           its file list; written last, so "stored" means this
                                         object exists (an interrupted push is invisible)

Downloads land in an :class:`~pitstop.registry.artifact_cache.ArtifactCache` on the host.
Every failure to reach the store is :class:`~pitstop.errors.Unavailable` naming it (a load
retries it with back-off; the version that serves keeps serving).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Collection, Iterable
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Final

from pitstop.errors import ArtifactIntegrityError, InvalidInput, Unavailable
from pitstop.registry.artifact_cache import ArtifactCache, remove_tree
from pitstop.registry.digest import CHUNK_BYTES, FileEntry, digest_hex, digest_of
from pitstop.registry.store import checked_entries, copy_checked

MARKER: Final = "artifact.json"
MULTIPART_BYTES: Final = 64 * 1024 * 1024
"""Files larger than this go up and down in parts of this size, several at once."""
ADDRESSING_STYLES: Final = ("auto", "path", "virtual")


class S3ArtifactStore:
    """Artifacts in ``s3://bucket/prefix``; local copies in ``cache``."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        cache: ArtifactCache,
        *,
        addressing_style: str = "auto",
        client: Any = None,
    ) -> None:
        """``client`` replaces the boto3 client built from the environment (tests). Building
        the client does no I/O."""
        if addressing_style not in ADDRESSING_STYLES:
            raise InvalidInput(
                f"PITSTOP_S3_ADDRESSING_STYLE: one of {list(ADDRESSING_STYLES)}, "
                f"got {addressing_style!r}"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = cache
        self._addressing_style = addressing_style
        self._client = client
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    # -- ArtifactStore -------------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        return self._marker(digest) is not None

    def put(
        self,
        source: Path,
        digest: str,
        entries: Iterable[FileEntry],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        entries = checked_entries(digest, entries)
        if self.has(digest):
            return
        # Copy into the local cache while hashing (the source may change under us), upload
        # what was hashed, and keep the copy: this host then serves it without a download.
        staged = self.cache.staging(digest)
        try:
            for entry in entries:
                copy_checked(source, staged, entry)
            transfer = self._transfer_config()
            for entry in entries:
                upload = partial(
                    self.client.upload_file, str(staged / Path(*entry.path.split("/"))),
                    self.bucket, self._key(digest, "files/" + entry.path), Config=transfer,
                    Callback=progress,
                )  # fmt: skip
                self._call("upload", entry.path, upload)
            listing = {
                "digest": digest,
                "files": [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in entries],
            }
            body = json.dumps(listing, sort_keys=True).encode()
            marker = partial(
                self.client.put_object, Bucket=self.bucket, Key=self._key(digest, MARKER),
                Body=body, ContentType="application/json",
            )  # fmt: skip
            self._call("upload", MARKER, marker)
            with self.cache.locked(digest):
                self.cache.install(digest, staged)
        finally:
            if staged.exists():
                remove_tree(staged)

    def local_path(self, digest: str) -> Path:
        cached = self.cache.lookup(digest)
        if cached is not None:
            return cached
        with self.cache.locked(digest):
            cached = self.cache.lookup(digest)  # another worker of this host got it first
            if cached is not None:
                return cached
            return self._download(digest)

    def delete(self, digest: str) -> None:
        prefix = self._key(digest, "")
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        marker = self._key(digest, MARKER)
        # The marker first: from then on the artifact is not stored, whatever is left.
        delete = self.client.delete_object
        self._call("delete", MARKER, partial(delete, Bucket=self.bucket, Key=marker))
        for page in self._call("list", prefix, lambda: list(pages)):
            for item in page.get("Contents", ()):
                key = item["Key"]
                self._call("delete", key, partial(delete, Bucket=self.bucket, Key=key))
        self.cache.discard(digest)

    def discard_local_copy(self, digest: str) -> bool:
        return self.cache.discard(digest)

    def trim_local_copies(self, keep: Collection[str]) -> None:
        self.cache.trim(keep)

    # -- the rest ------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _client(self._addressing_style)
            return self._client

    def _key(self, digest: str, name: str) -> str:
        key = f"sha256/{digest_hex(digest)}/{name}"
        return f"{self.prefix}/{key}" if self.prefix else key

    def _marker(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        key = self._key(digest, MARKER)
        try:
            answer = self._call(
                "read", MARKER, lambda: self.client.get_object(Bucket=self.bucket, Key=key)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._unavailable("read", MARKER, exc) from exc
        listing: dict[str, Any] = json.loads(answer["Body"].read())
        return listing

    def _download(self, digest: str) -> Path:
        listing = self._marker(digest)
        if listing is None or listing.get("digest") != digest:
            raise ArtifactIntegrityError(f"artifact {digest} is missing from the store {self.url}")
        entries = [FileEntry(f["path"], f["sha256"], int(f["size"])) for f in listing["files"]]
        if digest_of(entries) != digest or not all(_safe(e.path) for e in entries):
            raise ArtifactIntegrityError(
                f"the file list stored with artifact {digest} in {self.url} does not make its "
                "digest (changed in the store); refusing to use it"
            )
        staged = self.cache.staging(digest)
        try:
            transfer = self._transfer_config()
            for entry in entries:
                target = staged / Path(*entry.path.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                key = self._key(digest, "files/" + entry.path)
                download = partial(
                    self.client.download_file, self.bucket, key, str(target), Config=transfer
                )
                self._call("download", entry.path, download)
                if _sha256(target) != entry.sha256:
                    raise ArtifactIntegrityError(
                        f"artifact file {entry.path!r} of {digest} in {self.url} does not match "
                        "its recorded sha256 (changed in the store); refusing to use it"
                    )
                os.chmod(target, 0o444)
            return self.cache.install(digest, staged)
        finally:
            if staged.exists():
                remove_tree(staged)

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES
        )

    def _call(self, action: str, name: str, do: Callable[[], Any]) -> Any:
        """Run one S3 call; failing to reach the store (or being refused by it) is Unavailable
        naming the store, the action and the file."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return do()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if action == "read" and code in ("NoSuchKey", "404", "NotFound"):
                raise
            raise self._unavailable(action, name, exc) from exc
        except (BotoCoreError, S3UploadFailedError, OSError) as exc:
            if isinstance(exc, OSError) and not _is_network(exc):
                raise
            raise self._unavailable(action, name, exc) from exc

    def _unavailable(self, action: str, name: str, exc: BaseException) -> Unavailable:
        return Unavailable(f"artifact store {self.url} unreachable ({action} {name!r}): {exc}")


def connection_options(addressing_style: str = "auto") -> dict[str, Any]:
    """How to reach S3 as the SDK resolves it (credential chain, ``AWS_*`` variables, endpoint,
    region), for a reader that is not boto3 (pyarrow's S3 file system, for ``pitstop batch``):
    keyword arguments of ``pyarrow.fs.S3FileSystem``. Credentials are a snapshot (temporary
    ones expire with it)."""
    try:
        import boto3
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise Unavailable("s3:// needs the S3 extra: pip install 'pitstop[s3]'") from exc
    session = boto3.session.Session()
    s3 = _client(addressing_style, session)
    credentials = session.get_credentials()
    options: dict[str, Any] = {"region": s3.meta.region_name or "us-east-1"}
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
        if frozen.token:
            options["session_token"] = frozen.token
    else:
        options["anonymous"] = True
    endpoint = s3.meta.endpoint_url or ""
    scheme, _, host = endpoint.partition("://")
    if host and not host.rstrip("/").endswith("amazonaws.com"):
        options.update(endpoint_override=host.rstrip("/"), scheme=scheme or "https")
    if addressing_style == "virtual":
        options["force_virtual_addressing"] = True
    return options


class Prefix:
    """Objects directly under ``s3://bucket/prefix``, read and written whole (one PUT each:
    visible complete or not at all). For ``pitstop batch`` outputs."""

    def __init__(self, url: str, addressing_style: str = "auto", client: Any = None) -> None:
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not url.startswith("s3://") or not bucket:
            raise InvalidInput(f"{url!r}: expected s3://bucket[/prefix]")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._s3 = client if client is not None else _client(addressing_style)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def names(self) -> list[str]:
        start = self._key("")
        found: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, Delimiter="/"
            )
            for page in pages:
                found += [item["Key"][len(start) :] for item in page.get("Contents", ())]
        except Exception as exc:
            raise Unavailable(f"s3://{self.bucket}/{start} unreachable: {exc}") from exc
        return sorted(found)

    def read(self, name: str) -> bytes | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
            return bytes(body.read())
        except self._s3.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            raise Unavailable(f"s3://{self.bucket}/{self._key(name)}: {exc}") from exc

    def write(self, name: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)
        except Exception as exc:
            raise Unavailable(f"s3://{self.bucket}/{self._key(name)}: {exc}") from exc

    def remove(self, name: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as exc:
            raise Unavailable(f"s3://{self.bucket}/{self._key(name)}: {exc}") from exc


MAX_FOLDER_OBJECTS: Final = 10_000
"""Most objects :func:`download_folder` copies (a model folder, not a bucket)."""


def download_folder(
    url: str, into: Path, addressing_style: str = "auto", client: Any = None
) -> None:
    """Copy every object under ``s3://bucket/prefix`` into the folder ``into`` (created; the
    keys' paths below the prefix kept): KServe's ``STORAGE_URI`` for a server with no storage
    initializer. Raises InvalidInput for a URL that is not ``s3://bucket[/prefix]``, an empty
    prefix or an unsafe key, Unavailable when the store cannot be read."""
    if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
        raise InvalidInput(f"storage URI {url!r}: expected s3://bucket[/prefix]")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    s3 = client if client is not None else _client(addressing_style)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix + "/" if prefix else ""
        )
        keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
    except Exception as exc:
        raise Unavailable(f"storage URI {url} unreachable: {exc}") from exc
    names = [key[len(prefix) + 1 :] if prefix else key for key in keys if not key.endswith("/")]
    if not names:
        raise InvalidInput(f"storage URI {url}: no objects under it")
    if len(names) > MAX_FOLDER_OBJECTS:
        raise InvalidInput(f"storage URI {url}: more than {MAX_FOLDER_OBJECTS} objects")
    for name in names:
        if not _safe(name):
            raise InvalidInput(f"storage URI {url}: unsafe object name {name!r}")
    for key, name in zip([k for k in keys if not k.endswith("/")], names, strict=True):
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial_path = target.with_name(target.name + ".part")
        try:
            s3.download_file(bucket, key, str(partial_path))
        except Exception as exc:
            raise Unavailable(f"storage URI {url}: cannot download {name!r}: {exc}") from exc
        partial_path.replace(target)


def _client(addressing_style: str, session: Any = None) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise Unavailable(
            "PITSTOP_ARTIFACTS_URL is s3://...: install the S3 extra, pip install 'pitstop[s3]'"
        ) from exc
    config = Config(
        s3={"addressing_style": addressing_style},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return (session or boto3.session.Session()).client("s3", config=config)


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()


def _safe(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(parts) and not path.startswith("/") and ".." not in parts


def _is_network(exc: OSError) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError)
