"""CLI commands for observability: ``pitstop drift``, ``pitstop cost``, ``pitstop reference``.

``drift`` and ``cost`` read a running server (``--url``, default ``http://<host>:<http_port>``)
with a token that has the ``read`` scope (``--token``, ``PITSTOP_TOKEN``, or the local
``PITSTOP_HOME/admin.token``). ``reference`` writes a version's reference profile to the registry
directly, as ``models push --reference`` does through :func:`store_reference`.

Wire them into the root group with :func:`register`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import httpx
from rich.table import Table

from pitstop.cli.context import Context, json_option, out, pass_context
from pitstop.cli.delivery import duration_s
from pitstop.errors import InvalidInput
from pitstop.monitoring.profile import ReferenceProfile, profile_table, read_table
from pitstop.registry import Registry
from pitstop.settings import Settings


def store_reference(
    registry: Registry, model: str, version: int, path: Path, actor: str
) -> ReferenceProfile:
    """Profile the reference data at ``path`` (.csv, .jsonl, .parquet with pyarrow) against the
    version's declared inputs and store it (audited ``reference.set``). Raises InvalidInput
    naming what does not fit."""
    record = registry.version(model, version)
    inputs = []
    for spec in record.manifest.inputs:
        width = 1
        for dim in spec.shape[1:]:
            width = width * dim if dim > 0 and width > 0 else -1
        inputs.append((spec.name, width))
    table = read_table(path)
    if len(inputs) == 1 and inputs[0][1] < 0:
        inputs = [(inputs[0][0], len(table))]  # [-1, -1]: as many columns as the file has
    if not inputs:
        raise InvalidInput(f"{record.label} declares no inputs in its manifest to map columns to")
    profile = profile_table(table, inputs, f"file:{path.name}")
    registry.references.put(model, version, profile.to_json(), source=profile.source, actor=actor)
    return profile


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj.settings if isinstance(obj, Context) else Settings()


def token_of(settings: Settings, given: str | None) -> str | None:
    if given:
        return given
    if os.environ.get("PITSTOP_TOKEN"):
        return os.environ["PITSTOP_TOKEN"]
    local = settings.home / "admin.token"
    return local.read_text().strip() if local.is_file() else None


def server_get(
    ctx: click.Context, url: str | None, token: str | None, path: str, **params: Any
) -> Any:
    settings = settings_of(ctx)
    base = (url or f"http://{settings.host}:{settings.http_port}").rstrip("/")
    secret = token_of(settings, token)
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    try:
        response = httpx.get(base + path, params=params, headers=headers, timeout=30)
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach the server at {base}: {exc}") from exc
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise click.ClickException(f"{response.status_code}: {message}")
    return response.json()


url_option = click.option("--url", help="Server URL (default http://<host>:<http_port>).")
token_option = click.option("--token", help="Token with the read scope (or PITSTOP_TOKEN).")


@click.command()
@click.argument("model")
@click.option("--version", "only", type=int, help="Only this version.")
@click.option("--cached", is_flag=True, help="Show the last scores instead of scoring now.")
@url_option
@token_option
@json_option
@click.pass_context
def drift(
    ctx: click.Context,
    model: str,
    only: int | None,
    cached: bool,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Input drift of MODEL's versions on a running server: PSI and KS per feature, worst
    first, against each version's reference profile."""
    params = {} if cached else {"refresh": "1"}
    body = server_get(ctx, url, token, f"/v2/pitstop/models/{model}/drift", **params)
    versions = [v for v in body["versions"] if only is None or v["version"] == only]
    if as_json:
        out.print_json(data={**body, "versions": versions})
        return
    if not versions:
        out.print(f"{model}: no requests served since the server started")
        return
    threshold = body["psi_threshold"]
    for version in versions:
        title = f"{model} v{version['version']}"
        if "features" not in version:
            out.print(f"{title}: {version['status']}")
            continue
        table = Table(
            title=f"{title}: {version['window_rows']} live rows vs reference "
            f"{version['reference']} ({version['reference_rows']} rows)"
        )
        for column in ("feature", "PSI", "KS", "reference mean", "live mean", ""):
            table.add_column(column, justify="left" if column == "feature" else "right")
        for feature in version["features"]:
            flag = "[red]drifted[/red]" if feature["psi"] >= threshold else ""
            table.add_row(
                feature["name"], f"{feature['psi']:.3f}", f"{feature['ks']:.3f}",
                f"{feature['reference_mean']:.4g}", f"{feature['live_mean']:.4g}", flag,
            )  # fmt: skip
        out.print(table)


@click.command()
@click.option("--window", default="1h", show_default=True, help="Window: 90s, 30m, 1h, 1d.")
@url_option
@token_option
@json_option
@click.pass_context
def cost(
    ctx: click.Context, window: str, url: str | None, token: str | None, as_json: bool
) -> None:
    """Cost per model version on a running server (PITSTOP_COST_PER_HOUR, PITSTOP_REPLICAS)."""
    body = server_get(ctx, url, token, "/v2/pitstop/cost", window_s=str(duration_s(window)))
    if as_json:
        out.print_json(data=body)
        return
    hours = body["covered_s"] / 3600
    table = Table(
        title=f"cost over the last {hours:.2f} h ({body['replicas']} replica(s) at "
        f"{body['cost_per_hour']:g}/h each)"
    )
    for column in ("model", "version", "predictions", "compute s", "share", "cost", "per 1k"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in body["versions"]:
        per_1k = row["cost_per_1k_predictions"]
        table.add_row(
            row["model"], str(row["version"]), str(row["predictions"]),
            f"{row['compute_s']:.2f}", f"{row['share']:.1%}", f"{row['cost']:.4f}",
            "-" if per_1k is None else f"{per_1k:.4f}",
        )  # fmt: skip
    out.print(table)


@click.command()
@click.argument("model")
@click.argument("version", type=int)
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_context
def reference(ctx: Context, model: str, version: int, data: Path) -> None:
    """Store DATA (.csv, .jsonl, .parquet) as the reference profile of MODEL VERSION, for drift
    scores. Columns map to inputs by name (``amount``, ``input[3]``) or, for a model with one
    input tensor, in order."""
    with ctx.registry() as registry:
        profile = store_reference(registry, model, version, data, ctx.actor)
    names = ", ".join(f.name for f in profile.features[:8])
    more = "" if len(profile.features) <= 8 else f", ... ({len(profile.features)} features)"
    out.print(f"{model} v{version}: reference of {profile.rows} rows ({names}{more})")


def register(group: click.Group) -> None:
    """Add ``drift``, ``cost`` and ``reference`` to the ``pitstop`` command group."""
    group.add_command(drift)
    group.add_command(cost)
    group.add_command(reference)
