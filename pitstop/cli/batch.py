"""``pitstop batch``: a registered version scoring files offline (docs/batch.md)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from pitstop.cli.context import (
    Context,
    column_mapping,
    err,
    json_option,
    out,
    pass_context,
    plain,
)

if TYPE_CHECKING:
    from pitstop.batch.ledger import Ledger

FORMATS = ("parquet", "csv", "jsonl")
PLAIN_EVERY_S = 10.0
"""Without a terminal, a progress line at most this often."""


@click.command()
@click.argument("ref")
@click.argument("input_spec", metavar="INPUT")
@click.argument("output")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default="parquet",
              show_default=True, help="Format of the output parts.")  # fmt: skip
@click.option("--input-format", type=click.Choice(FORMATS),
              help="Format of the input files (default: from their suffix).")  # fmt: skip
@click.option("--column", "columns", multiple=True, metavar="INPUT=COL[,COL...]",
              help="Feed a model input from this column (a list column, or one value per "
                   "row) or these columns side by side. Default: the column named like the "
                   "input.")  # fmt: skip
@click.option("--keep", help="Input columns copied beside the predictions: a comma-separated "
              "list, 'all' (default) or 'none'.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=1024, show_default=True,
              help="Rows per runtime call.")  # fmt: skip
@click.option("--part-rows", type=click.IntRange(1, 100_000_000), default=50_000,
              show_default=True, help="Rows per output part (the unit of --resume).")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 256),
              help="Worker processes, each with its own runtime (default: the cores).")  # fmt: skip
@click.option("--max-errors", type=float, help="Stop past this many failed rows (>= 1) or this "
              "fraction of the rows read (< 1). Default: never.")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue OUTPUT after the last complete part.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Where scoring runs: this machine's cores, or a Ray "
              "cluster (pip install 'pitstop[ray]').")  # fmt: skip
@click.option("--address", default="auto", show_default=True,
              help="--engine ray: the cluster (auto, HOST:PORT, ray://HOST:10001).")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=2, show_default=True,
              help="--engine ray: actors, each with its own runtime.")  # fmt: skip
@click.option("--actor-cpus", type=click.FloatRange(0.01, 1024), default=1.0,
              show_default=True, help="--engine ray: CPUs reserved per actor.")  # fmt: skip
@json_option
@pass_context
def batch(
    ctx: Context,
    ref: str,
    input_spec: str,
    output: str,
    output_format: str,
    input_format: str | None,
    columns: tuple[str, ...],
    keep: str | None,
    batch_size: int,
    part_rows: int,
    workers: int | None,
    max_errors: float | None,
    resume: bool,
    engine: str,
    address: str,
    concurrency: int,
    actor_cpus: float,
    as_json: bool,
) -> None:
    """Score INPUT (CSV, JSON Lines or Parquet: a file, a folder or a glob, local or s3://) with
    the version REF (fraud@production, fraud:4) into the folder OUTPUT (local or
    s3://bucket/prefix), part by part, resumable."""
    try:  # pyarrow is an extra: imported by this command only
        from pitstop.batch.job import BatchOptions, TooManyErrors, run
        from pitstop.batch.table import input_files
        from pitstop.registry.s3_store import connection_options
    except ImportError as exc:
        raise click.ClickException(
            f"pitstop batch needs pyarrow: pip install 'pitstop[batch]' ({exc})"
        ) from exc
    if max_errors is not None and max_errors <= 0:
        raise click.BadParameter("must be > 0", param_hint="--max-errors")
    options = BatchOptions(
        ref=ref, input=input_spec, output=output, output_format=output_format,
        input_format=input_format, columns=column_mapping(columns), keep=_keep(keep),
        batch_rows=batch_size, part_rows=part_rows, workers=workers or _cores(),
        max_errors=max_errors, resume=resume, engine=engine, address=address,
        concurrency=concurrency, actor_cpus=actor_cpus,
    )  # fmt: skip
    s3 = partial(connection_options, ctx.settings.s3_addressing_style)
    total = input_files(input_spec, s3).with_format(input_format).total_rows()
    with ctx.registry() as registry, _progress(total, quiet=as_json) as report:
        try:
            result = run(registry, options, actor=ctx.actor, progress=report, settings=ctx.settings)
        except TooManyErrors as exc:
            err.print(f"stopped: {exc}; the parts written stay: --resume with a higher "
                      "--max-errors continues after them (the errors so far count)",
                      highlight=False, markup=False)  # fmt: skip
            raise SystemExit(1) from exc
    state = result.ledger
    if as_json:
        out.print_json(data={**plain(state), "seconds": round(result.seconds, 3)})
        return
    rate = state.rows / result.seconds if result.seconds else 0.0
    err.print(
        f"{state.model} v{state.version} ({state.digest[:19]}…) scored {state.scored} of "
        f"{state.rows} rows into {output} ({state.parts_done} parts) in {result.seconds:.1f} s "
        f"({rate:,.0f} rows/s); {state.errors} errors"
        + (f" (errors-*.jsonl in {output})" if state.errors else ""),
        highlight=False, markup=False,
    )  # fmt: skip


def _cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _keep(value: str | None) -> tuple[str, ...] | None:
    if value is None or value == "all":
        return None
    if value == "none":
        return ()
    return tuple(c.strip() for c in value.split(",") if c.strip())


@contextmanager
def _progress(total: int | None, quiet: bool) -> Iterator[Callable[[Ledger], None] | None]:
    """A rich bar on a terminal (rows, rows/s, ETA when the total is known, errors); plain
    lines at most every :data:`PLAIN_EVERY_S` otherwise; nothing with ``--json``."""
    began = time.monotonic()
    if quiet:
        yield None
        return
    if not err.is_terminal:
        last = [0.0]

        def line(state: Ledger) -> None:
            now = time.monotonic()
            if now - last[0] >= PLAIN_EVERY_S:
                last[0] = now
                rate = state.rows / max(now - began, 1e-9)
                err.print(f"{state.rows} rows ({rate:,.0f}/s), {state.errors} errors, "
                          f"{state.parts_done} parts", highlight=False, markup=False)  # fmt: skip

        yield line
        return
    with Progress(
        TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,.0f} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"), TimeRemainingColumn(),
        TextColumn("{task.fields[errors]} errors"), console=err, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("scoring", total=total, rate=0.0, errors=0)

        def update(state: Ledger) -> None:
            rate = state.rows / max(time.monotonic() - began, 1e-9)
            bar.update(task, completed=state.rows, rate=rate, errors=state.errors)

        yield update


def register(group: click.Group) -> None:
    group.add_command(batch)
