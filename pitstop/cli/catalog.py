"""Registry commands: push and list models, their versions, and aliases."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

import click
from rich.table import Table

from pitstop.cli.context import (
    Context,
    err,
    json_option,
    out,
    pass_context,
    plain,
    print_json,
    progress,
    v,
    when,
)
from pitstop.cli.mlflow import tracking_uri
from pitstop.cli.observability import store_reference
from pitstop.cli.signing import KEY_OPTION_HELP, print_signed, read_signing_keys, sign_version
from pitstop.packaging.mlflow_import import lineage
from pitstop.packaging.mlflow_tracking import ModelUri, TrackingServer
from pitstop.registry import (
    read_manifest,
)
from pitstop.serving.warmup import load_and_validate


@click.group()
def models() -> None:
    """Register model versions and list models."""


@models.command("push")
@click.argument("source")
@click.option("--name", required=True, help="Model name.")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the version.")
@click.option("--meta", "metas", multiple=True, help="Lineage metadata KEY=VALUE (repeatable).")
@click.option("--trust-pickle", is_flag=True, help="Allow pickle/joblib deserialisation.")
@click.option("--trust-code", is_flag=True, help="Allow the package's Python handler to run.")
@click.option("--reason", help="Why, for the audit history.")
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Reference data (.csv, .jsonl, .parquet) profiled for drift monitoring.",
)
@click.option(
    "--no-validate",
    is_flag=True,
    help="Skip loading the model and running its warm-up examples before registering it.",
)
@click.option(
    "--sign",
    "sign_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sign the version's digest with this " + KEY_OPTION_HELP,
)
@json_option
@pass_context
def push(
    ctx: Context,
    source: str,
    name: str,
    aliases: tuple[str, ...],
    metas: tuple[str, ...],
    trust_pickle: bool,
    trust_code: bool,
    reason: str | None,
    reference: Path | None,
    no_validate: bool,
    sign_keys: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Push SOURCE (a folder with pitstop.yaml, an MLflow model folder, or an MLflow registry
    URI models:/NAME@ALIAS or models:/NAME/VERSION read from MLFLOW_TRACKING_URI) as a new
    version.

    Unless --no-validate, the model is loaded here first and its warm-up examples run (and
    compared with their expected outputs), so a broken package is never registered. With
    --sign, the version's digest is signed and the signature stored (docs/signing.md)."""
    meta = _parse_meta(metas)
    if source.startswith("models:/"):
        with ExitStack() as stack:
            tracking = stack.enter_context(TrackingServer(tracking_uri(None)))
            version = tracking.resolve(ModelUri.parse(source))
            path = Path(stack.enter_context(TemporaryDirectory(prefix="pitstop-mlflow-")))
            path = path / "model"
            tracking.download(version, path)
            meta = {**lineage(version, tracking.uri), **meta}
            _push(
                ctx, path, name, aliases, meta, trust_pickle, trust_code, reason, reference,
                no_validate, sign_keys, as_json,
            )  # fmt: skip
        return
    path = Path(source)
    if not path.is_dir():
        raise click.BadParameter(
            f"{source!r} is not a folder (nor a models:/ URI)", param_hint="SOURCE"
        )
    _push(
        ctx, path, name, aliases, meta, trust_pickle, trust_code, reason, reference, no_validate,
        sign_keys, as_json,
    )  # fmt: skip


def _push(
    ctx: Context,
    path: Path,
    name: str,
    aliases: tuple[str, ...],
    meta: dict[str, str],
    trust_pickle: bool,
    trust_code: bool,
    reason: str | None,
    reference: Path | None,
    no_validate: bool,
    sign_keys: tuple[Path, ...],
    as_json: bool,
) -> None:
    signers = read_signing_keys(sign_keys)  # a bad key file stops the push before it starts
    if not no_validate:
        runtime, _metadata, report = load_and_validate(
            path,
            read_manifest(path),
            trust_pickle=trust_pickle,
            trust_code=trust_code,
            threads=1,
            runs=2,
        )
        runtime.unload()
        if not report.deterministic:
            err.print("warning: two runs of a warm-up example gave different outputs")
    with ctx.registry() as registry, progress(f"pushing {path}", quiet=as_json) as on_bytes:
        result = registry.push(
            path,
            name=name,
            aliases=aliases,
            meta=meta,
            actor=ctx.actor,
            trust_pickle=trust_pickle,
            trust_code=trust_code,
            reason=reason,
            progress=on_bytes,
        )
        if reference is not None:
            store_reference(registry, name, result.version.number, reference, ctx.actor)
        signed = sign_version(registry, result.version, signers, actor=ctx.actor, reason=reason)
    version = result.version
    if as_json:
        print_json(
            {"created": result.created, **plain(version), "signed_by": [k for k, _ in signed]}
        )
        return
    verb = "pushed" if result.created else "already present as"
    out.print(f"{verb} {version.model} v{version.number} {version.digest}", soft_wrap=True)
    for alias in aliases:
        out.print(f"  {alias} → v{version.number}")
    print_signed(signed)


@models.command("list")
@json_option
@pass_context
def list_models(ctx: Context, as_json: bool) -> None:
    """Every model with its latest version and aliases."""
    with ctx.registry() as registry:
        rows = registry.models()
    if as_json:
        print_json([plain(row) for row in rows])
        return
    table = Table("MODEL", "LATEST", "ALIASES", "CREATED")
    for row in rows:
        aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(row.aliases.items()))
        table.add_row(row.name, v(row.latest_version), aliases, when(row.created_at))
    out.print(table)


@click.command()
@click.argument("model")
@json_option
@pass_context
def versions(ctx: Context, model: str, as_json: bool) -> None:
    """The versions of MODEL, newest first."""
    with ctx.registry() as registry:
        rows = registry.versions(model)
        aliases = registry.aliases(model)
    by_version: dict[int, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(number, []).append(alias)
    if as_json:  # what the table shows, and more: every field of each version, its aliases
        print_json(
            [{**plain(row), "aliases": sorted(by_version.get(row.number, []))} for row in rows]
        )
        return
    table = Table("VERSION", "DIGEST", "RUNTIME", "ALIASES", "META", "CREATED", "BY")
    for row in rows:
        meta = " ".join(f"{k}={v}" for k, v in sorted(row.meta.items()))
        table.add_row(
            f"v{row.number}",
            row.digest[:19],
            row.runtime,
            ", ".join(sorted(by_version.get(row.number, []))),
            meta,
            when(row.created_at),
            row.created_by,
        )
    out.print(table)


@click.group()
def alias() -> None:
    """Point aliases (production, staging, any name) at versions."""


@alias.command("set")
@click.argument("model")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--reason", help="Why, for the audit history.")
@pass_context
def alias_set(ctx: Context, model: str, name: str, version: int, reason: str | None) -> None:
    """Point alias NAME of MODEL at VERSION."""
    with ctx.registry() as registry:
        registry.set_alias(model, name, version, actor=ctx.actor, reason=reason)
    out.print(f"{model}: {name} → v{version}")


@alias.command("delete")
@click.argument("model")
@click.argument("name")
@click.option("--reason", help="Why, for the audit history.")
@pass_context
def alias_delete(ctx: Context, model: str, name: str, reason: str | None) -> None:
    """Remove alias NAME of MODEL (the server stops serving it)."""
    with ctx.registry() as registry:
        registry.delete_alias(model, name, actor=ctx.actor, reason=reason)
    out.print(f"{model}: {name} removed")


def _parse_meta(items: Sequence[str]) -> dict[str, str]:
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


@click.command()
@pass_context
def migrate(ctx: Context) -> None:
    """Create or upgrade the registry schema, then exit (a deployment's migration job; every
    server also does it at start, under a lock, so running it is never required)."""
    with ctx.registry() as registry:
        err.print(f"registry schema up to date (generation {registry.generation()})")


def register(group: click.Group) -> None:
    """Add ``models``, ``versions``, ``alias`` and ``migrate`` to ``group``."""
    for command in (models, versions, alias, migrate):
        group.add_command(command)
