"""``pitstop import sentence-transformers`` and ``pitstop optimize``."""

from __future__ import annotations

import click

from pitstop.cli.context import (
    Context,
    json_option,
    out,
    pass_context,
    plain,
    print_json,
)
from pitstop.packaging.export import import_sentence_transformer
from pitstop.packaging.optimize import optimize as run_optimize
from pitstop.packaging.optimize import parse_reference, parse_targets


@click.group("import")
def import_() -> None:
    """Turn models from other ecosystems into pitstop versions."""


@import_.command("sentence-transformers")
@click.argument("source")
@click.option("--name", required=True, help="Model name.")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the version.")
@click.option("--max-seq-length", type=int, help="Truncate texts to this many tokens.")
@click.option("--reason", help="Why, for the audit history.")
@json_option
@pass_context
def import_sentence_transformers(
    ctx: Context,
    source: str,
    name: str,
    aliases: tuple[str, ...],
    max_seq_length: int | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Export SOURCE (a model folder or an installed package that ships one) to ONNX and push
    it as an `embeddings` version. Needs the torch extra; nothing is downloaded."""
    with ctx.registry() as registry:
        result = import_sentence_transformer(
            registry, source, name=name, aliases=aliases, actor=ctx.actor, reason=reason,
            max_seq_length=max_seq_length,
        )  # fmt: skip
    version = result.version
    if as_json:
        print_json({"created": result.created, **plain(version)})
        return
    verb = "imported" if result.created else "already present as"
    out.print(f"{verb} {version.model} v{version.number} {version.digest}", soft_wrap=True)


@click.command()
@click.argument("reference")
@click.option("--quantize", type=click.Choice(["int8"]), required=True, help="Quantization.")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the new version.")
@click.option("--threads", type=int, default=2, show_default=True, help="Threads to measure.")
@click.option("--bench-seconds", type=float, default=3.0, show_default=True)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="FIGURE=MIN",
    help="Accuracy minimum, e.g. cosine_min=0.98 (repeatable; replaces the runtime's defaults: "
    "cosine_mean=0.99 and cosine_min=0.98 for embeddings, agreement=0.99 for onnx).",
)
@click.option(
    "--max-fp32-nodes",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="At most this many outlier-prone nodes stay fp32 to meet the targets (0: none).",
)
@click.option("--reason", help="Why, for the audit history.")
@json_option
@pass_context
def optimize(
    ctx: Context,
    reference: str,
    quantize: str,
    aliases: tuple[str, ...],
    threads: int,
    bench_seconds: float,
    targets: tuple[str, ...],
    max_fp32_nodes: int,
    reason: str | None,
    as_json: bool,
) -> None:
    """Quantise REFERENCE (MODEL, MODEL@ALIAS or MODEL@VERSION) into a new version, with an
    accuracy and speed report against the original in its metadata. No alias moves unless
    --alias is given."""
    model, ref = parse_reference(reference)
    goals = parse_targets(targets) if targets else None
    with ctx.registry() as registry:
        result = run_optimize(
            registry, model, ref, quantize=quantize, actor=ctx.actor, aliases=aliases,
            reason=reason, threads=threads, bench_seconds=bench_seconds, targets=goals,
            max_fp32_nodes=max_fp32_nodes,
        )  # fmt: skip
    version = result.pushed.version
    if as_json:
        print_json({"version": version.number, "digest": version.digest, **result.report})
        return
    out.print(f"pushed {version.model} v{version.number} {version.digest}", soft_wrap=True)
    for key, value in result.report.items():
        out.print(f"  {key}: {value}")


def register(group: click.Group) -> None:
    """Add ``import`` and ``optimize`` to ``group``."""
    group.add_command(import_)
    group.add_command(optimize)
