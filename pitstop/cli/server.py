"""``pitstop serve``: the server, an Engine hosted over HTTP and gRPC."""

from __future__ import annotations

import click

from pitstop.cli.context import Context, pass_context
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
@pass_context
def serve(
    ctx: Context,
    host: str | None,
    http_port: int | None,
    grpc_port: int | None,
    workers: int | None,
) -> None:
    """Serve every aliased model version over the Open Inference Protocol."""
    changes = {"host": host, "http_port": http_port, "grpc_port": grpc_port, "workers": workers}
    settings = ctx.settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
    run_server(settings)


def register(group: click.Group) -> None:
    group.add_command(serve)
