"""CLI commands of the closed loop: ``pitstop feedback``, ``pitstop outcomes``, ``pitstop ab``.

All three talk to a running server (``--url``, default ``http://<host>:<http_port>``; a token
with the ``infer`` scope for feedback, ``read`` for the reports: ``--token``,
``PITSTOP_TOKEN`` or the local ``PITSTOP_HOME/admin.token``), because the predictions that
feedback joins may live in the server's memory. ``feedback`` sends a file (JSON Lines, a JSON
list, or CSV with an ``id`` column and one of ``label``, ``value``, ``reward``; ``at`` and
``row`` optional) in chunks and sums what became of them.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
from rich.table import Table

from pitstop.cli import delivery
from pitstop.cli.context import json_option, out
from pitstop.cli.observability import server_get, settings_of, token_of, token_option, url_option

CHUNK = 5_000
"""Feedback items per request (the server takes up to 10,000)."""


def read_feedback(path: Path) -> Iterator[dict[str, Any]]:
    """The items of a feedback file, in order (.csv, .json, or JSON Lines for anything else)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                item: dict[str, Any] = {k: v for k, v in row.items() if k and v not in ("", None)}
                for key in ("value", "reward", "at"):
                    if key in item:
                        with contextlib.suppress(ValueError):  # the server names the field
                            item[key] = float(item[key])
                if "row" in item and str(item["row"]).isdigit():
                    item["row"] = int(item["row"])
                yield item
        return
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        loaded = json.loads(text)
        yield from loaded["feedback"] if isinstance(loaded, dict) else loaded
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"{path}:{number}: not JSON ({exc})") from exc


@click.command()
@click.argument("model")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@url_option
@token_option
@json_option
@click.pass_context
def feedback(
    ctx: click.Context, model: str, path: Path, url: str | None, token: str | None, as_json: bool
) -> None:
    """Send the outcomes in PATH (what happened after MODEL's predictions) to a server."""
    settings = settings_of(ctx)
    base = (url or f"http://{settings.host}:{settings.http_port}").rstrip("/")
    secret = token_of(settings, token)
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    totals = {"accepted": 0, "replaced": 0, "unknown": 0, "expired": 0}
    items = list(read_feedback(path))
    with httpx.Client(timeout=120, headers=headers) as client:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            try:
                response = client.post(
                    f"{base}/v2/models/{model}/feedback", json={"feedback": chunk}
                )
            except httpx.TransportError as exc:
                raise click.ClickException(f"cannot reach the server at {base}: {exc}") from exc
            if response.status_code == 404 and "expired" in response.text:
                body = {"accepted": 0, "replaced": 0, "unknown": len(chunk), "expired": 0}
            elif response.status_code != 200:
                message = _error(response)
                raise click.ClickException(
                    f"items {start + 1}-{start + len(chunk)}: {response.status_code}: {message}"
                    f" ({totals['accepted']} accepted before)"
                )
            else:
                body = response.json()
            for key in totals:
                totals[key] += int(body.get(key, 0))
    if as_json:
        out.print_json(data={"model": model, "items": len(items), **totals})
        return
    out.print(
        f"{model}: {len(items)} items: {totals['accepted']} accepted "
        f"({totals['replaced']} replaced earlier feedback), {totals['unknown']} unknown, "
        f"{totals['expired']} expired"
    )


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text


def _cell(value: Any, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if percent else f"{value:.4g}"


@click.command()
@click.argument("model")
@click.option("--since", help="Only predictions made since (ISO 8601 time).")
@url_option
@token_option
@json_option
@click.pass_context
def outcomes(
    ctx: click.Context,
    model: str,
    since: str | None,
    url: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """MODEL's outcome metrics per version and arm, with 95% confidence intervals."""
    params = {"since": since} if since else {}
    body = server_get(ctx, url, token, f"/v2/models/{model}/outcomes", **params)
    if as_json:
        out.print_json(data=body)
        return
    if not body["versions"]:
        out.print(f"{model}: no feedback yet")
        return
    table = Table(title=f"{model}: outcomes (95% CI)")
    for column in ("version", "arm", "metric", "n", "value", "CI"):
        table.add_column(column, justify="left" if column in ("arm", "metric") else "right")
    for group in body["versions"]:
        for name, metric in group["metrics"].items():
            percent = name in ("accuracy", "error_rate", "conversion")
            table.add_row(
                f"v{group['version']}", group["arm"] or "-", name, str(metric["n"]),
                _cell(metric["value"], percent),
                f"{_cell(metric['low'], percent)} to {_cell(metric['high'], percent)}",
            )  # fmt: skip
    out.print(table)


@click.command("report")
@click.argument("model")
@click.option("--arms", help="Arms to compare, the control first (default: the policy's).")
@click.option("--metric", help="Metrics, comma-separated (default: every one with feedback).")
@click.option("--alpha", type=float, help="False-verdict rate over all looks (default 0.05).")
@click.option("--power", type=float, help="Power at the MDE (default 0.8).")
@click.option("--mde", type=float, help="Minimum detectable effect, absolute (default 0.02).")
@click.option("--min-samples", type=int, help="Per arm before any verdict (default 100).")
@click.option("--since", help="Only predictions made since (ISO 8601 time).")
@url_option
@token_option
@json_option
@click.pass_context
def report(ctx: click.Context, /, model: str, url: str | None, token: str | None, as_json: bool,
           **options: Any) -> None:  # fmt: skip
    """Each arm of MODEL against the first: difference, always-valid CI and p-value, the
    sample still needed, and a verdict."""
    params = {k: str(v) for k, v in options.items() if v is not None}
    body = server_get(ctx, url, token, f"/v2/models/{model}/ab", **params)
    if as_json:
        out.print_json(data=body)
        return
    design = body["design"]
    out.print(
        f"{model}: {body['test']}; alpha {design['alpha']:g}, power {design['power']:g}, "
        f"MDE {design['mde']:g}"
    )
    for part in body["reports"]:
        table = Table(title=f"{part['b']} vs {part['a']}")
        for column in ("metric", part["a"], part["b"], "difference", "CI", "p", "needed/arm",
                       "verdict"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
        for c in part["comparisons"]:
            percent = c["metric"] in ("accuracy", "error_rate", "conversion")
            table.add_row(
                c["metric"], f"{_cell(c['a']['value'], percent)} (n={c['a']['n']})",
                f"{_cell(c['b']['value'], percent)} (n={c['b']['n']})",
                _cell(c["difference"], percent),
                f"{_cell(c['low'], percent)} to {_cell(c['high'], percent)}",
                _cell(c["p_value"], False), str(c["needed"]), c["verdict"],
            )  # fmt: skip
        out.print(table)
        for c in part["comparisons"]:
            out.print(f"  {c['metric']}: {c['reason']}", highlight=False)
    if not body["reports"]:
        out.print("no arms to compare")


def register(group: click.Group) -> None:
    """Add ``feedback`` and ``outcomes`` to the ``pitstop`` command group, and ``report`` to
    its ``ab`` group (which sets the A/B weights)."""
    group.add_command(feedback)
    group.add_command(outcomes)
    delivery.ab.add_command(report)
