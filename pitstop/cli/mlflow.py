"""``pitstop import mlflow`` and ``pitstop follow mlflow``: an MLflow registry as a source."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from types import FrameType

import click

from pitstop.cli.context import Context, err, json_option, out, pass_context, plain, print_json
from pitstop.cli.delivery import duration_s
from pitstop.cli.embeddings import import_
from pitstop.errors import InvalidInput
from pitstop.packaging.mlflow_import import Follower, Rule, Trust, import_version
from pitstop.packaging.mlflow_tracking import MlflowVersion, ModelUri, TrackingServer

STOP_POLL_S = 0.1

TRACKING_HELP = "The MLflow tracking server, http[s]://host:port (default MLFLOW_TRACKING_URI)."


def tracking_uri(value: str | None) -> str:
    """``value``, else ``MLFLOW_TRACKING_URI``; a usage error when neither is set."""
    uri = value or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise click.UsageError("--tracking-uri is required (or set MLFLOW_TRACKING_URI)")
    return uri


tracking_uri_of = tracking_uri


def _source(text: str) -> ModelUri:
    """``fraud@champion``, ``fraud/3``, ``fraud`` (with --all-versions) or a models:/ URI."""
    if text.startswith("models:/"):
        return ModelUri.parse(text)
    if "@" in text:
        return ModelUri.parse(f"models:/{text}")
    if "/" in text:
        return ModelUri.parse(f"models:/{text}")
    return ModelUri(text, version="latest")


@import_.command("mlflow")
@click.argument("source")
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--all-versions", is_flag=True, help="Import every version of the MLflow model.")
@click.option("--name", help="pitstop model name (default: the MLflow model's name).")
@click.option("--alias", "aliases", multiple=True, help="Point this pitstop alias at it.")
@click.option("--trust-pickle", is_flag=True, help="Allow pickle/cloudpickle model files.")
@click.option("--trust-code", is_flag=True, help="Allow pyfunc models (they run their code).")
@click.option("--no-validate", is_flag=True, help="Push without loading the model first.")
@click.option("--reason", help="Why, for the audit history.")
@json_option
@pass_context
def import_mlflow(
    ctx: Context,
    source: str,
    tracking_uri: str | None,
    all_versions: bool,
    name: str | None,
    aliases: tuple[str, ...],
    trust_pickle: bool,
    trust_code: bool,
    no_validate: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Copy versions of an MLflow registered model into pitstop, with their lineage.

    SOURCE is MODEL@ALIAS, MODEL/VERSION, MODEL (its latest version, or every version with
    --all-versions) or a models:/ URI."""
    uri = _source(source)
    if all_versions and (uri.alias is not None or uri.version != "latest"):
        raise click.UsageError("--all-versions takes a model name, not a version or alias")
    trust = Trust(pickle=trust_pickle, code=trust_code)
    results = []
    with TrackingServer(tracking_uri_of(tracking_uri)) as tracking:
        chosen: Sequence[MlflowVersion] = (
            sorted(tracking.versions(uri.name), key=lambda v: int(v.version))
            if all_versions
            else [tracking.resolve(uri)]
        )
        with ctx.registry() as registry:
            for version in chosen:
                result = import_version(
                    registry, tracking, version, name=name or version.name, aliases=aliases,
                    actor=ctx.actor, reason=reason, trust=trust, validate=not no_validate,
                )  # fmt: skip
                results.append((version, result))
                if not as_json:
                    verb = "imported" if result.created else "already present as"
                    out.print(
                        f"MLflow {version.name}/{version.version} {verb} "
                        f"{result.version.model} v{result.version.number} {result.version.digest}",
                        soft_wrap=True,
                    )
    if as_json:
        print_json(
            [
                {"mlflow_version": v.version, "created": r.created, **plain(r.version)}
                for v, r in results
            ]
        )


@click.group()
def follow() -> None:
    """Keep pitstop's aliases where another registry's aliases point."""


@follow.command("mlflow")
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--model", "mlflow_model", required=True, help="The MLflow registered model.")
@click.option("--name", help="pitstop model name (default: the MLflow model's name).")
@click.option(
    "--alias",
    "rules",
    multiple=True,
    required=True,
    metavar="MLFLOW=PITSTOP",
    help="Move pitstop's alias PITSTOP when MLflow's alias MLFLOW moves (repeatable), "
    "e.g. champion=production.",
)
@click.option("--interval", default="10s", show_default=True, help="Time between polls.")
@click.option("--once", is_flag=True, help="Poll once and exit.")
@click.option(
    "--prefetch/--no-prefetch",
    default=True,
    show_default=True,
    help="Import versions registered after the newest one imported or aliased as soon as they "
    "appear, so that a promotion is only an alias move.",
)
@click.option("--trust-pickle", is_flag=True, help="Allow pickle/cloudpickle model files.")
@click.option("--trust-code", is_flag=True, help="Allow pyfunc models (they run their code).")
@pass_context
def follow_mlflow(
    ctx: Context,
    tracking_uri: str | None,
    mlflow_model: str,
    name: str | None,
    rules: tuple[str, ...],
    interval: str,
    once: bool,
    prefetch: bool,
    trust_pickle: bool,
    trust_code: bool,
) -> None:
    """Poll an MLflow model's aliases; import each version they point at and move pitstop's
    alias to it, audited with MLflow's version and user. Runs until SIGTERM/SIGINT."""
    try:
        parsed = [Rule.parse(rule) for rule in rules]
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), param_hint="--alias") from exc
    interval_s = duration_s(interval)
    stop = SignalStop()

    def report(message: str) -> None:
        err.print(message, highlight=False, markup=False, soft_wrap=True)

    with TrackingServer(tracking_uri_of(tracking_uri)) as tracking, ctx.registry() as registry:
        follower = Follower(
            tracking, registry, mlflow_model, name or mlflow_model, parsed, ctx.actor,
            Trust(pickle=trust_pickle, code=trust_code), report,
        )  # fmt: skip
        if once:
            follower.tick()
            return

        def stop_on(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, stop_on)
        signal.signal(signal.SIGINT, stop_on)
        report(
            f"following MLflow {mlflow_model} at {tracking.uri} every {interval_s:g}s: "
            + ", ".join(f"{r.mlflow_alias} → {r.alias}" for r in parsed)
        )
        follower.run(interval_s, stop)


class SignalStop:
    """Set from a signal handler, so set as a plain attribute: a handler must take no lock (it
    runs between two bytecodes of the main thread, which may hold that very lock, as
    ``threading.Event.set`` would need); waited for in 0.1 s slices."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            left = STOP_POLL_S if end is None else min(STOP_POLL_S, end - time.monotonic())
            if left <= 0:
                break
            time.sleep(left)
        return self._set


def register(group: click.Group) -> None:
    """Add ``follow`` to ``group`` (``import mlflow`` joins the ``import`` group)."""
    group.add_command(follow)
