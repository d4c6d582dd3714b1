"""``pitstop token``: bearer tokens for management calls, kept in the registry."""

from __future__ import annotations

import click
from rich.table import Table

from pitstop.cli.context import Context, json_option, out, pass_context, print_json
from pitstop.errors import NotFound
from pitstop.security.token import READ, SCOPES, TokenFile, check_scopes, new_secret


@click.group()
def token() -> None:
    """Bearer tokens for management calls, kept in the registry (every replica accepts them;
    only their sha256 is stored). Tokens in a host's PITSTOP_HOME/tokens.json still work on
    that host."""


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(sorted(SCOPES)),
    default=[READ],
    show_default=True,
    help="admin: change what is served; read: read management data.",
)
@pass_context
def token_create(ctx: Context, name: str, scopes: tuple[str, ...]) -> None:
    """Create a token and print it once (only its digest is stored)."""
    check_scopes(scopes)
    secret, digest = new_secret()
    with ctx.registry() as registry:
        registry.tokens.create(name, digest, scopes, actor=ctx.actor)
    click.echo(secret)


@token.command("list")
@json_option
@pass_context
def token_list(ctx: Context, as_json: bool) -> None:
    """Token names, scopes and where they are kept (never the secrets)."""
    with ctx.registry() as registry:
        shared = registry.tokens.all()
    rows: list[tuple[str, list[str], str, str]] = [
        (t.name, list(t.scopes), "registry", t.created_by) for t in shared
    ] + [(t.name, sorted(t.scopes), "this host", "") for t in TokenFile(ctx.settings.home).load()]
    if as_json:
        keys = ("name", "scopes", "kept", "created_by")
        print_json([dict(zip(keys, row, strict=True)) for row in rows])
        return
    table = Table("NAME", "SCOPES", "KEPT IN", "CREATED BY")
    for name, scopes, kept, created_by in rows:
        table.add_row(name, ", ".join(scopes), kept, created_by)
    out.print(table)


@token.command("revoke")
@click.argument("name")
@pass_context
def token_revoke(ctx: Context, name: str) -> None:
    """Revoke a token; every server stops accepting it as soon as it reads the registry (at
    once on PostgreSQL). A token kept in this host's file is removed from the file."""
    with ctx.registry() as registry:
        try:
            registry.tokens.revoke(name, actor=ctx.actor)
        except NotFound:
            TokenFile(ctx.settings.home).revoke(name)
    out.print(f"revoked {name}")


def register(group: click.Group) -> None:
    group.add_command(token)
