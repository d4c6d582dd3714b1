"""The ``pitstop`` group: global options, every command, and the entry point."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from pitstop.cli import (
    batch,
    catalog,
    delivery,
    embeddings,
    history,
    mlflow,
    observability,
    outcomes,
    server,
    signing,
    stream,
    tokens,
)
from pitstop.cli.context import Context, err
from pitstop.errors import PitstopError
from pitstop.settings import Settings


@click.group()
@click.option("--home", type=click.Path(path_type=Path), help="PITSTOP_HOME (default ./.pitstop).")
@click.option("--registry-url", help="PITSTOP_REGISTRY_URL, e.g. postgresql+psycopg://...")
@click.version_option(package_name="pitstop")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, registry_url: str | None) -> None:
    """pitstop: serve models, swap and roll back versions, see what served when."""
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    if registry_url is not None:
        overrides["registry_url"] = registry_url
    ctx.obj = Context(Settings(**overrides))


# Every command module adds its commands the same way.
for _module in (
    server,
    catalog,
    tokens,
    history,
    delivery,
    observability,
    outcomes,
    embeddings,
    mlflow,
    batch,
    stream,
    signing,
):
    _module.register(cli)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: one-line errors and a non-zero exit code on failure."""
    try:
        cli.main(args=argv, prog_name="pitstop", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PitstopError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
    except OSError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
