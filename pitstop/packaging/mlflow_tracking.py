"""An MLflow tracking server's model registry, read over its REST API (``/api/2.0/mlflow``).

pitstop does not import MLflow to read a registry: the REST API is MLflow's stable contract,
and it keeps MLflow (and its pins) out of the server's environment. Authentication follows
MLflow's own variables: ``MLFLOW_TRACKING_TOKEN`` (bearer), ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` (basic), ``MLFLOW_TRACKING_INSECURE_TLS`` and
``MLFLOW_TRACKING_SERVER_CERT_PATH``.

Artifacts are downloaded from where the version's download URI points: through the tracking
server (``mlflow-artifacts:``, the default of ``mlflow server``) or from a local folder
(``file:`` or a path, for a server on this host). Other stores (``s3://``, ``gs://``, ...) are
refused with a message: start the tracking server with ``--serve-artifacts``. Downloads are
bounded in files and bytes, and every listed path must stay inside the target folder.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx

from pitstop.errors import InvalidInput, NotFound, PitstopError, Unavailable

MAX_FILES: Final = 10_000
MAX_BYTES: Final = 50 * 1024**3
_MODEL_URI: Final = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/([^/]+))/?")


@dataclass(frozen=True)
class ModelUri:
    """``models:/name@alias``, ``models:/name/N`` or ``models:/name/latest``."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelUri:
        match = _MODEL_URI.fullmatch(text)
        if match is None:
            raise InvalidInput(
                f"{text!r}: expected models:/NAME@ALIAS, models:/NAME/VERSION or "
                "models:/NAME/latest"
            )
        name, alias, version = match[1], match[2], match[3]
        if version is not None and version != "latest" and not version.isdigit():
            raise InvalidInput(f"{text!r}: the version must be a number or 'latest'")
        return cls(name, alias, version)

    def __str__(self) -> str:
        return (
            f"models:/{self.name}@{self.alias}"
            if self.alias
            else f"models:/{self.name}/{self.version}"
        )


@dataclass(frozen=True)
class MlflowVersion:
    """One version of a registered model, as the tracking server describes it."""

    name: str
    version: str
    status: str
    source: str
    run_id: str | None
    user: str | None
    """Who created the version (``user_id``), else who ran its run (``mlflow.user``)."""
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


class TrackingServer:
    """A tracking server at ``uri`` (``http[s]://host[:port][/prefix]``). Close it after use."""

    def __init__(self, uri: str, timeout_s: float = 30.0) -> None:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput(
                f"--tracking-uri {uri!r}: pitstop reads an MLflow tracking server over HTTP "
                "(http[s]://host:port); start one with `mlflow server`"
            )
        self.uri = uri.rstrip("/")
        self._client = httpx.Client(
            base_url=self.uri,
            timeout=timeout_s,
            headers=_auth_headers(),
            auth=_basic_auth(),
            verify=_verify(),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TrackingServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the registry ---------------------------------------------------------------------------

    def resolve(self, uri: ModelUri) -> MlflowVersion:
        """The version ``uri`` names now; NotFound naming it otherwise."""
        if uri.alias is not None:
            return self.by_alias(uri.name, uri.alias)
        if uri.version == "latest":
            versions = self.versions(uri.name)
            if not versions:
                raise NotFound(f"MLflow model {uri.name!r} has no versions")
            return max(versions, key=lambda v: int(v.version))
        assert uri.version is not None
        return self.version(uri.name, uri.version)

    def by_alias(self, name: str, alias: str) -> MlflowVersion:
        body = self._get(
            "registered-models/alias", {"name": name, "alias": alias}, f"{name}@{alias}"
        )
        return self._version_of(body.get("model_version"))

    def version(self, name: str, version: str) -> MlflowVersion:
        body = self._get(
            "model-versions/get", {"name": name, "version": version}, f"{name}/{version}"
        )
        return self._version_of(body.get("model_version"))

    def versions(self, name: str) -> list[MlflowVersion]:
        """Every version of ``name`` (paged through)."""
        escaped = name.replace("\\", "\\\\").replace("'", "\\'")
        found: list[MlflowVersion] = []
        token: str | None = None
        while True:
            params = {"filter": f"name='{escaped}'", "max_results": "200"}
            if token:
                params["page_token"] = token
            body = self._get("model-versions/search", params, name)
            found.extend(self._version_of(item) for item in body.get("model_versions") or [])
            token = body.get("next_page_token") or None
            if token is None or len(found) > MAX_FILES:
                return found

    def download(self, version: MlflowVersion, target: Path) -> None:
        """The version's files into ``target`` (created; must not exist)."""
        body = self._get(
            "model-versions/get-download-uri",
            {"name": version.name, "version": version.version},
            f"{version.name}/{version.version}",
        )
        location = body.get("artifact_uri")
        if not isinstance(location, str) or not location:
            raise Unavailable(f"MLflow gave no download URI for {version.name}/{version.version}")
        target.mkdir(parents=True)
        scheme = urlsplit(location).scheme
        if scheme == "mlflow-artifacts":
            self._download_proxied(_artifact_path(location), target)
        elif scheme in ("", "file"):
            _copy_local(Path(urlsplit(location).path if scheme else location), target)
        else:
            raise Unavailable(
                f"the artifacts of {version.name}/{version.version} are in {location}; pitstop "
                "downloads them through the tracking server (mlflow server --serve-artifacts) "
                "or from a local folder"
            )

    # -- plumbing -------------------------------------------------------------------------------

    def _version_of(self, item: object) -> MlflowVersion:
        if not isinstance(item, Mapping):
            raise Unavailable("the MLflow tracking server answered without a model_version")
        run_id = item.get("run_id") or None
        user = item.get("user_id") or None
        if user is None and run_id:
            user = self._run_user(str(run_id))
        tags = {
            str(tag.get("key")): str(tag.get("value"))
            for tag in item.get("tags") or []
            if isinstance(tag, Mapping)
        }
        return MlflowVersion(
            name=str(item.get("name")),
            version=str(item.get("version")),
            status=str(item.get("status") or "READY"),
            source=str(item.get("source") or ""),
            run_id=None if run_id is None else str(run_id),
            user=None if user is None else str(user),
            aliases=tuple(str(a) for a in item.get("aliases") or ()),
            tags=tags,
            description=str(item.get("description") or ""),
        )

    def _run_user(self, run_id: str) -> str | None:
        try:
            run = self._get("runs/get", {"run_id": run_id}, f"run {run_id}").get("run") or {}
        except NotFound:
            return None
        for tag in (run.get("data") or {}).get("tags") or []:
            if isinstance(tag, Mapping) and tag.get("key") == "mlflow.user":
                return str(tag.get("value"))
        user = (run.get("info") or {}).get("user_id")
        return str(user) if user else None

    def _get(self, path: str, params: Mapping[str, str], what: str) -> dict[str, Any]:
        try:
            response = self._client.get(f"/api/2.0/mlflow/{path}", params=params)
        except httpx.HTTPError as exc:
            raise Unavailable(f"MLflow tracking server {self.uri}: {exc}") from exc
        return _json(response, f"MLflow {what}")

    def _download_proxied(self, root: str, target: Path) -> None:
        total = 0
        for files, (relative, size) in enumerate(self._walk(root, ""), start=1):
            total += size
            if files > MAX_FILES or total > MAX_BYTES:
                raise InvalidInput(
                    f"the MLflow model at {root} has more than {MAX_FILES} files or "
                    f"{MAX_BYTES} bytes"
                )
            destination = _inside(target, relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            url = f"/api/2.0/mlflow-artifacts/artifacts/{quote(f'{root}/{relative}')}"
            try:
                with self._client.stream("GET", url) as response, destination.open("wb") as out:
                    if response.status_code != 200:
                        response.read()
                        _json(response, f"MLflow artifact {relative}")
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            except httpx.HTTPError as exc:
                raise Unavailable(f"downloading {relative} from {self.uri}: {exc}") from exc

    def _walk(self, root: str, relative: str) -> Iterator[tuple[str, int]]:
        path = f"{root}/{relative}" if relative else root
        try:
            response = self._client.get(
                "/api/2.0/mlflow-artifacts/artifacts", params={"path": path}
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"MLflow tracking server {self.uri}: {exc}") from exc
        for item in _json(response, f"MLflow artifacts {path}").get("files") or []:
            name = str(item.get("path", ""))
            child = PurePosixPath(name).name
            if not child or child in (".", ".."):
                raise InvalidInput(f"MLflow listed an unsafe artifact path {name!r}")
            joined = f"{relative}/{child}" if relative else child
            if item.get("is_dir"):
                yield from self._walk(root, joined)
            else:
                yield joined, int(item.get("file_size") or 0)


def _json(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        return body
    message = body.get("message") if isinstance(body, dict) else None
    code = body.get("error_code") if isinstance(body, dict) else None
    detail = message or response.text[:200] or f"HTTP {response.status_code}"
    if response.status_code == 404 or code == "RESOURCE_DOES_NOT_EXIST":
        raise NotFound(f"{what}: {detail}")
    if response.status_code in (401, 403):
        raise PitstopError(
            f"{what}: the tracking server refused the credentials ({response.status_code}): "
            f"{detail}; set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD"
        )
    raise Unavailable(f"{what}: HTTP {response.status_code}: {detail}")


def _artifact_path(location: str) -> str:
    """``mlflow-artifacts:/0/models/m-1/artifacts`` (or with a host) → the path after it."""
    path = urlsplit(location).path.strip("/")
    parts = PurePosixPath(path).parts
    if not parts or any(part in ("..", ".") for part in parts):
        raise InvalidInput(f"unsafe MLflow artifact location {location!r}")
    return path


def _inside(target: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("..", ".", "") for part in parts) or relative.startswith("/"):
        raise InvalidInput(f"MLflow listed an unsafe artifact path {relative!r}")
    return target.joinpath(*parts)


def _copy_local(source: Path, target: Path) -> None:
    if not source.is_dir():
        raise NotFound(
            f"the model's artifacts are in {source}, which is not a folder on this host; start "
            "the tracking server with --serve-artifacts"
        )
    shutil.copytree(source, target, dirs_exist_ok=True, symlinks=False)


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _basic_auth() -> httpx.BasicAuth | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password and not os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return httpx.BasicAuth(user, password)
    return None


def _verify() -> bool | str:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
