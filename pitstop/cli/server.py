"""``pitstop serve``: the server, an Engine hosted over HTTP and gRPC."""

from __future__ import annotations

from pathlib import Path

import click

from pitstop.cli.context import Context, err, pass_context
from pitstop.errors import PitstopError
from pitstop.transports.app import serve as run_server


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
@click.option("--trust-pickle", is_flag=True, help="With --model-dir: allow pickle/joblib.")
@click.option("--trust-code", is_flag=True, help="With --model-dir: allow its Python handler.")
@pass_context
def serve(
    ctx: Context,
    host: str | None,
    http_port: int | None,
    grpc_port: int | None,
    workers: int | None,
    model_dir: Path | None,
    model_name: str | None,
    trust_pickle: bool,
    trust_code: bool,
) -> None:
    """Serve every aliased model version over the Open Inference Protocol."""
    changes = {"host": host, "http_port": http_port, "grpc_port": grpc_port, "workers": workers}
    settings = ctx.settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
    if model_dir is not None:
        adopt(ctx, model_dir, model_name or model_dir.resolve().name, trust_pickle, trust_code)
    elif model_name or trust_pickle or trust_code:
        raise click.UsageError("--model-name, --trust-pickle and --trust-code need --model-dir")
    run_server(settings)


def adopt(ctx: Context, folder: Path, name: str, trust_pickle: bool, trust_code: bool) -> None:
    """Register ``folder`` in the embedded registry and point ``name``'s production alias at it
    (the same content again is the same version: restarts add nothing). The folder is only
    read; its files are copied into ``PITSTOP_HOME``."""
    if ctx.settings.registry_url is not None:
        raise click.UsageError(
            "--model-dir serves one folder from the embedded registry in PITSTOP_HOME; "
            "unset PITSTOP_REGISTRY_URL, or push the folder to that registry instead"
        )
    try:
        with ctx.registry() as registry:
            result = registry.push(
                folder, name=name, aliases=["production"], actor="server",
                trust_pickle=trust_pickle, trust_code=trust_code,
                reason=f"pitstop serve --model-dir {folder}",
            )  # fmt: skip
    except PitstopError as exc:
        raise click.ClickException(f"cannot serve {folder}: {exc}") from exc
    version = result.version
    err.print(f"serving {folder} as {name} v{version.number} ({version.digest})")


def register(group: click.Group) -> None:
    group.add_command(serve)
