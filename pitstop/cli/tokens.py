"""``pitstop token``: bearer tokens for management calls."""

from __future__ import annotations

import click
from rich.table import Table

from pitstop.cli.context import Context, json_option, out, pass_context, print_json
from pitstop.security.token import READ, SCOPES, TokenFile


@click.group()
def token() -> None:
    """Bearer tokens for management calls (kept in PITSTOP_HOME/tokens.json, mode 0600)."""


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
    click.echo(TokenFile(ctx.settings.home).create(name, scopes))


@token.command("list")
@json_option
@pass_context
def token_list(ctx: Context, as_json: bool) -> None:
    """Token names and scopes (never the secrets)."""
    tokens = TokenFile(ctx.settings.home).load()
    if as_json:
        print_json([{"name": t.name, "scopes": sorted(t.scopes)} for t in tokens])
        return
    table = Table("NAME", "SCOPES")
    for item in tokens:
        table.add_row(item.name, ", ".join(sorted(item.scopes)))
    out.print(table)


@token.command("revoke")
@click.argument("name")
@pass_context
def token_revoke(ctx: Context, name: str) -> None:
    """Revoke a token; running servers stop accepting it at once."""
    TokenFile(ctx.settings.home).revoke(name)
    out.print(f"revoked {name}")


def register(group: click.Group) -> None:
    group.add_command(token)
