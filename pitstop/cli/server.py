"""``pitstop serve``: the server, an Engine hosted over HTTP and gRPC."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory

import click
import yaml

from pitstop.cli.context import Context, err, pass_context
from pitstop.cli.mlflow import tracking_uri
from pitstop.engine import Engine
from pitstop.errors import PitstopError
from pitstop.packaging.mlflow_tracking import ModelUri, TrackingServer
from pitstop.registry import read_manifest
from pitstop.registry.layout import FORMATS, manifest_of
from pitstop.registry.s3_store import download_folder
from pitstop.serving.warmup import load_and_validate
from pitstop.settings import Settings
from pitstop.stream.host import StreamHost
from pitstop.transports.app import serve as run_server
from pitstop.transports.app import server_exposure, tls_files


@click.command()
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--http-port", type=int, help="REST port (default 8000).")
@click.option("--grpc-port", type=int, help="gRPC port (default 8001).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes sharing the ports (PITSTOP_WORKERS, default 1).",
)
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Serve this folder (a pitstop package or an MLflow model, e.g. KServe's /mnt/models) "
    "from the embedded registry, as the production version of --model-name.",
)
@click.option("--model-name", help="Name to serve --model-dir under (default: the folder's name).")
@click.option(
    "--model-format",
    type=click.Choice(FORMATS),
    help="With --model-dir holding a bare model file (KServe's layouts): which runtime reads it "
    "(default: decided from the file names).",
)
@click.option("--trust-pickle", is_flag=True, help="With --model-dir: allow pickle/joblib.")
@click.option("--trust-code", is_flag=True, help="With --model-dir: allow its Python handler.")
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Allow a non-loopback --host with neither TLS nor inference authentication "
    "(PITSTOP_INSECURE; refused otherwise).",
)
@pass_context
def serve(
    ctx: Context,
    host: str | None,
    http_port: int | None,
    grpc_port: int | None,
    workers: int | None,
    model_dir: Path | None,
    model_name: str | None,
    model_format: str | None,
    trust_pickle: bool,
    trust_code: bool,
    insecure: bool | None,
) -> None:
    """Serve every aliased model version over the Open Inference Protocol."""
    changes = {
        "host": host, "http_port": http_port, "grpc_port": grpc_port, "workers": workers,
        "insecure": insecure,
    }  # fmt: skip
    settings = ctx.settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
    server_exposure(settings)  # refuse before adopting or downloading anything
    tls_files(settings)
    if model_dir is None and settings.storage_uri and settings.worker_dir is None:
        model_dir = fetch(ctx, settings.storage_uri)
        model_name = model_name or _name_of(settings.storage_uri)
    if model_dir is not None and settings.worker_dir is None:
        name = model_name or model_dir.resolve().name
        adopt(ctx, model_dir, name, model_format, trust=(trust_pickle, trust_code))
        if settings.default_model is None:  # MLflow's root POST /invocations serves it
            settings = settings.model_copy(update={"default_model": name})
    elif model_name or model_format or trust_pickle or trust_code:
        raise click.UsageError(
            "--model-name, --model-format, --trust-pickle and --trust-code need --model-dir"
        )
    run_server(settings, [partial(hosted_streams, settings)] if settings.streams else [])


def hosted_streams(settings: Settings, engine: Engine) -> StreamHost:
    """The consumers of ``PITSTOP_STREAMS`` over the server's Engine."""
    return StreamHost(
        engine.dataplane,
        engine.observability.streams,
        settings.streams,
        drain_timeout_s=settings.drain_timeout_s,
    )


def adopt(
    ctx: Context, folder: Path, name: str, model_format: str | None, trust: tuple[bool, bool]
) -> None:
    """Register ``folder`` in the embedded registry and point ``name``'s production alias at it
    (the same content again is the same version: restarts add nothing). The folder is only
    read; its files are copied into ``PITSTOP_HOME``. A folder with a bare model file (KServe's
    layouts) is pushed as a copy with the manifest :func:`manifest_of` decides."""
    if ctx.settings.registry_url is not None:
        raise click.UsageError(
            "--model-dir serves one folder from the embedded registry in PITSTOP_HOME; "
            "unset PITSTOP_REGISTRY_URL, or push the folder to that registry instead"
        )
    trust_pickle, trust_code = trust
    try:
        with ExitStack() as stack:
            source = folder
            if not any((folder / marker).is_file() for marker in ("pitstop.yaml", "MLmodel")):
                names = [path.name for path in folder.iterdir() if path.is_file()]
                document = manifest_of(names, model_format)
                ctx.settings.home.mkdir(parents=True, exist_ok=True)
                staging = Path(stack.enter_context(TemporaryDirectory(dir=ctx.settings.home)))
                source = staging / "model"
                source.mkdir()
                shutil.copy2(folder / document["artifact"], source / document["artifact"])
                (source / "pitstop.yaml").write_text(yaml.safe_dump(document))
            # Loaded and warmed here first, as `pitstop models push` does: a model that cannot
            # load (or needs a trust flag) stops the command with the reason, instead of a
            # server that never turns ready.
            runtime, _metadata, _report = load_and_validate(
                source, read_manifest(source), trust_pickle=trust_pickle, trust_code=trust_code,
                threads=1, runs=1,
            )  # fmt: skip
            runtime.unload()
            registry = stack.enter_context(ctx.registry())
            result = registry.push(
                source, name=name, aliases=["production"], actor="server",
                trust_pickle=trust_pickle, trust_code=trust_code,
                reason=f"pitstop serve --model-dir {folder}",
            )  # fmt: skip
    except PitstopError as exc:
        raise click.ClickException(f"cannot serve {folder}: {exc}") from exc
    version = result.version
    err.print(f"serving {folder} as {name} v{version.number} ({version.digest})")


def fetch(ctx: Context, uri: str) -> Path:
    """The folder ``uri`` (PITSTOP_STORAGE_URI / KServe's STORAGE_URI) names: a local path as
    it is, ``s3://bucket/prefix`` or an MLflow registry URI (``models:/fraud@champion``, from
    ``MLFLOW_TRACKING_URI``) downloaded afresh into ``PITSTOP_HOME/storage``."""
    if uri.startswith("models:/"):
        folder = ctx.settings.home / "storage" / "model"
        shutil.rmtree(folder, ignore_errors=True)
        try:
            with TrackingServer(tracking_uri(None)) as tracking:
                tracking.download(tracking.resolve(ModelUri.parse(uri)), folder)
        except PitstopError as exc:
            raise click.ClickException(str(exc)) from exc
        return folder
    if uri.startswith("file://") or uri.startswith("/"):
        folder = Path(uri.removeprefix("file://"))
        if not folder.is_dir():
            raise click.UsageError(f"storage URI {uri}: no such folder")
        return folder
    if not uri.startswith("s3://"):
        raise click.UsageError(
            f"storage URI {uri}: pitstop downloads s3:// itself; for other schemes let KServe's "
            "storage initializer fetch it and pass --model-dir /mnt/models"
        )
    folder = ctx.settings.home / "storage" / "model"
    shutil.rmtree(folder, ignore_errors=True)
    try:
        download_folder(uri, folder, ctx.settings.s3_addressing_style)
    except PitstopError as exc:
        raise click.ClickException(str(exc)) from exc
    return folder


def _name_of(uri: str) -> str:
    """The model a storage URI names: ``s3://models/fraud/`` → ``fraud``; for MLflow,
    ``models:/fraud@champion`` or ``models:/fraud/3`` → ``fraud``."""
    if uri.startswith("models:/"):
        return ModelUri.parse(uri).name
    return uri.rstrip("/").rsplit("/", 1)[-1]


def register(group: click.Group) -> None:
    group.add_command(serve)
