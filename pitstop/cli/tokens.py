"""``pitstop token``: bearer tokens with scopes, expiry and rate limits, kept in the registry."""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from pitstop.cli.context import Context, json_option, out, pass_context, print_json
from pitstop.cli.delivery import duration_s
from pitstop.errors import InvalidInput, NotFound
from pitstop.security.token import READ, TokenFile, check_scopes, new_secret

SCOPE_HELP = (
    "admin: everything; read: metadata, statistics, metrics, drift, cost, traffic; infer: "
    "inference on every model; infer:PATTERN: on models matching the glob (infer:fraud, "
    "infer:'fraud-*'). Repeat for several."
)


@click.group()
def token() -> None:
    """Bearer tokens, kept in the registry (every replica accepts them; only their sha256 is
    stored). Tokens in a host's PITSTOP_HOME/tokens.json still work on that host."""


@token.command("create")
@click.argument("name", required=False)
@click.option("--scope", "scopes", multiple=True, default=[READ], show_default=True,
              help=SCOPE_HELP)  # fmt: skip
@click.option("--expires", help="Refused after this long: 30d, 12h, 90m (default: never).")
@click.option("--rate", type=float, help="Requests per second (default: PITSTOP_RATE_LIMIT).")
@click.option("--burst", type=click.IntRange(1), help="Requests at once above the rate.")
@pass_context
def token_create(
    ctx: Context,
    name: str | None,
    scopes: tuple[str, ...],
    expires: str | None,
    rate: float | None,
    burst: int | None,
) -> None:
    """Create a token and print it once (only its digest is stored). NAME defaults to a new
    ``token-<hex>``; the name is what logs and the audit history show."""
    try:
        check_scopes(scopes)
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--scope") from None
    expires_at = None
    if expires is not None:
        try:
            seconds = duration_s(expires)
        except click.BadParameter as exc:
            raise click.BadParameter(exc.message, param_hint="--expires") from None
        if seconds <= 0:
            raise click.BadParameter("must be a positive duration", param_hint="--expires")
        expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
    if rate is not None and not 0 < rate < math.inf:
        raise click.BadParameter(
            "requests per second must be a positive number", param_hint="--rate"
        )
    name = name or f"token-{secrets.token_hex(4)}"
    secret, digest = new_secret()
    with ctx.registry() as registry:
        registry.tokens.create(
            name, digest, scopes, actor=ctx.actor, expires_at=expires_at, rate_limit=rate,
            burst=burst,
        )  # fmt: skip
    click.echo(secret)


@token.command("list")
@json_option
@pass_context
def token_list(ctx: Context, as_json: bool) -> None:
    """Token names, scopes, expiry, limits and where they are kept (never the secrets)."""
    with ctx.registry() as registry:
        shared = registry.tokens.all()
    rows: list[dict[str, Any]] = [
        {
            "name": t.name,
            "scopes": list(t.scopes),
            "kept": "registry",
            "created_by": t.created_by,
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "rate_limit": t.rate_limit,
            "burst": t.burst,
        }
        for t in shared
    ] + [
        {
            "name": t.name,
            "scopes": sorted(map(str, t.scopes)),
            "kept": "this host",
            "created_by": "",
            "expires_at": None,
            "rate_limit": None,
            "burst": None,
        }
        for t in TokenFile(ctx.settings.home).load()
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("NAME", "SCOPES", "EXPIRES", "RATE", "KEPT IN", "CREATED BY")
    for row in rows:
        rate = "" if row["rate_limit"] is None else f"{row['rate_limit']:g}/s"
        table.add_row(
            str(row["name"]), ", ".join(row["scopes"]), str(row["expires_at"] or "never"), rate,
            str(row["kept"]), str(row["created_by"]),
        )  # fmt: skip
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
