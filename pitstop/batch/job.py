"""A batch run: a registered version scoring files, part by part, resumable.

:func:`run` resolves the version (``fraud@production``, ``fraud:4``, ``fraud@4``), fetches its
verified files, plans the column mapping, and scores the input's parts in order — in this
process (``workers=1``) or in worker processes that each load the runtime once (``workers>1``;
at most ``workers + 1`` parts are in flight, results are written in input order). Each part's
outputs and its errors file are written before the ledger counts the part (see
:mod:`pitstop.batch.ledger`). The run ends in the registry's audit history as ``batch.run``.
Memory is bounded by the parts in flight, not by the input.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import orjson

from pitstop.batch import ledger, scorer
from pitstop.batch.ledger import Ledger
from pitstop.batch.scorer import Scored, Scorer
from pitstop.batch.table import (
    FORMATS,
    Folder,
    Input,
    Part,
    input_files,
    read_output,
    write_part,
)
from pitstop.errors import Conflict, InvalidInput, PitstopError
from pitstop.protocol.columns import Source, plan
from pitstop.registry import Registry, VersionRecord
from pitstop.registry.names import parse_version_ref
from pitstop.registry.s3_store import Prefix, connection_options
from pitstop.settings import Settings

STAMP_VERSION: Final = "pitstop_version"
STAMP_DIGEST: Final = "pitstop_digest"


class TooManyErrors(PitstopError):
    """The run stopped at ``--max-errors``; the parts written so far stay (``--resume``)."""


@dataclass(frozen=True)
class BatchOptions:
    ref: str
    """``model@alias``, ``model@N``, ``model:N`` or ``model`` (production)."""
    input: str
    output: str
    """A folder, local or ``s3://bucket/prefix``."""
    output_format: str = "parquet"
    input_format: str | None = None
    columns: dict[str, list[str]] = field(default_factory=dict)
    """Model input → the column(s) feeding it (``--column``)."""
    keep: tuple[str, ...] | None = None
    """Input columns copied to the output beside the predictions; None = all of them."""
    batch_rows: int = 1024
    part_rows: int = 50_000
    workers: int = 1
    max_errors: float | None = None
    """Stop past this many failed rows (>= 1), or this fraction of the rows read (< 1)."""
    resume: bool = False
    engine: str = "local"
    """``local`` (worker processes here) or ``ray`` (a Ray cluster, Ray Data)."""
    address: str = "auto"
    """The Ray cluster (``auto``, ``127.0.0.1:6380``, ``ray://head:10001``)."""
    concurrency: int = 2
    """Ray actors, each with its own runtime."""
    actor_cpus: float = 1.0
    """CPUs Ray reserves per actor (fractions allowed)."""


@dataclass(frozen=True)
class BatchResult:
    ledger: Ledger
    seconds: float
    stopped: str | None = None


def run(
    registry: Registry,
    options: BatchOptions,
    *,
    actor: str,
    progress: Callable[[Ledger], None] | None = None,
    settings: Settings | None = None,
) -> BatchResult:
    """Score ``options.input`` into ``options.output`` (see the module docstring). Raises
    TooManyErrors past ``max_errors`` (after recording the run), Conflict for an output that
    exists without ``resume`` or a resume that does not match, InvalidInput for bad input."""
    began = time.monotonic()
    if options.output_format not in FORMATS:
        raise InvalidInput(f"--format {options.output_format!r}: one of {', '.join(FORMATS)}")
    model, ref = parse_version_ref(options.ref)
    record = registry.version(model, ref)
    folder = registry.fetch(record)
    settings = settings if settings is not None else Settings()
    s3 = partial(connection_options, settings.s3_addressing_style)
    objects = partial(Prefix, addressing_style=settings.s3_addressing_style)
    source = input_files(options.input, s3).with_format(options.input_format)
    names = source.column_names()
    keep = tuple(names) if options.keep is None else options.keep
    missing = [name for name in keep if name not in names]
    if missing:
        raise InvalidInput(f"--keep {missing[0]}: no such column (columns: {', '.join(names)})")
    local = Scorer(folder, record.manifest, trust_pickle=record.trust_pickle,
                   trust_code=record.trust_code)  # fmt: skip
    try:
        produced = {spec.name for spec in local.outputs} | {STAMP_VERSION, STAMP_DIGEST}
        clash = [name for name in keep if name in produced]
        if clash:
            raise InvalidInput(
                f"--keep {clash[0]}: the output has a column of that name (a model output or "
                "the version stamp); leave it out of --keep, or rename it in the input"
            )
        kept_for_plan = keep if options.keep is not None else ()
        sources = plan(local.inputs, names, options.columns, kept_for_plan)
        wanted = Ledger(
            model=model, version=record.number, digest=record.digest,
            inputs=tuple(source.uris), input_fingerprint=source.fingerprint(),
            mapping={s.input.name: list(s.columns) for s in sources}, keep=keep,
            part_rows=options.part_rows, format=options.output_format,
        )  # fmt: skip
        stamp = {STAMP_VERSION: str(record.number), STAMP_DIGEST: record.digest}
        if options.engine == "ray":
            local.close()
            return _on_ray(registry, options, settings, Folder(options.output, s3, objects), source,
                           record, sources, keep, stamp, wanted, actor, began)  # fmt: skip
        out = Folder(options.output, s3, objects)
        state = _prepare(out, wanted, options.resume)
        if options.workers > 1:
            local.close()
        text = frozenset(c for s in sources for c in s.columns)
        parts = source.parts(options.part_rows, state.parts_done, text)
        scored = _engine(options, record, folder, local, sources, parts)
        stopped = None
        for part, result in scored:
            write_part(out, part, keep, result.ok, result.outputs, options.output_format, stamp)
            _write_errors(out, part, result)
            state = state.after_part(part.rows, len(result.errors))
            state.save(out)
            if progress is not None:
                progress(state)
            stopped = _over(options.max_errors, state)
            if stopped is not None:
                break
        if stopped is None:
            state = Ledger(**{**state.__dict__, "finished": True})
            state.save(out)
    finally:
        local.close()
    seconds = time.monotonic() - began
    registry.runs.record(
        model, record.number,
        {"digest": record.digest, "input": options.input, "output": options.output,
         "rows": state.rows, "scored": state.scored, "errors": state.errors,
         "seconds": round(seconds, 3), "resumed": options.resume,
         **({"stopped": stopped} if stopped else {})},
        actor=actor,
    )  # fmt: skip
    if stopped is not None:
        raise TooManyErrors(stopped)
    return BatchResult(state, seconds)


def _on_ray(
    registry: Registry,
    options: BatchOptions,
    settings: Settings,
    out: Folder,
    source: Input,
    record: VersionRecord,
    sources: Sequence[Source],
    keep: Sequence[str],
    stamp: dict[str, str],
    wanted: Ledger,
    actor: str,
    began: float,
) -> BatchResult:
    """The run on Ray: no parts of ours (Ray retries failed tasks itself), so no ``--resume``;
    the ledger is written once, finished, with what the output holds."""
    from pitstop.batch.ray_engine import Work, run_on_ray  # ray is imported by this engine only

    if options.resume:
        raise InvalidInput("--resume is for --engine local: Ray retries failed tasks itself")
    if options.output_format == "csv":
        raise InvalidInput("--engine ray writes Parquet or JSON Lines (--format)")
    if len(set(source.formats)) != 1:
        raise InvalidInput("--engine ray reads files of one format")
    _prepare(out, wanted, resume=False)
    work = Work(record.model, record.number, tuple(sources), tuple(keep), stamp,
                options.batch_rows)  # fmt: skip
    run_on_ray(
        settings, work, address=options.address, source=source, output=out,
        output_format=options.output_format, concurrency=options.concurrency,
        actor_cpus=options.actor_cpus,
    )  # fmt: skip
    scored = read_output(out).num_rows
    errors = sum(
        (out.read(name) or b"").count(b"\n")
        for name in out.names()
        if name.startswith("errors-ray-")
    )
    state = Ledger(**{**wanted.__dict__, "rows": scored + errors, "scored": scored,
                      "errors": errors, "finished": True,
                      "extra": {"engine": "ray", "address": options.address}})  # fmt: skip
    state.save(out)
    seconds = time.monotonic() - began
    registry.runs.record(
        record.model, record.number,
        {"digest": record.digest, "input": options.input, "output": options.output,
         "rows": state.rows, "scored": scored, "errors": errors, "seconds": round(seconds, 3),
         "engine": "ray"},
        actor=actor,
    )  # fmt: skip
    return BatchResult(state, seconds)


def _prepare(out: Folder, wanted: Ledger, resume: bool) -> Ledger:
    """The ledger to continue from: a new one in an empty or new folder, or the folder's own
    when resuming (parts it does not count, half-written ones included, are removed)."""
    names = out.names()
    existing = ledger.load(out) if names else None
    if resume:
        if existing is None:
            raise Conflict(f"--resume: {out.uri} holds no pitstop batch output to resume")
        existing.check_resume(wanted)
        for name in names:
            index = _part_index(name)
            if name.startswith(".") or (index is not None and index >= existing.parts_done):
                out.remove(name)
        return Ledger(**{**existing.__dict__, "finished": False})
    if names:
        raise Conflict(f"{out.uri} exists and is not empty: --resume to continue it, or choose "
                       "another output folder")  # fmt: skip
    wanted.save(out)
    return wanted


def _part_index(name: str) -> int | None:
    for prefix in ("part-", "errors-"):
        if name.startswith(prefix):
            digits = name[len(prefix) :].split(".", 1)[0]
            return int(digits) if digits.isdigit() else None
    return None


def _engine(
    options: BatchOptions,
    record: VersionRecord,
    folder: Path,
    local: Scorer,
    sources: Sequence[Source],
    parts: Iterator[Part],
) -> Iterator[tuple[Part, Scored]]:
    """Each part with its scores, in input order."""
    names = [c for s in sources for c in s.columns]
    if options.workers <= 1:
        for part in parts:
            yield part, local.score(sources, part.columns(names), part.rows, options.batch_rows)
        return
    context = multiprocessing.get_context("spawn")
    initargs = (str(folder), record.manifest.to_json(), record.trust_pickle, record.trust_code)
    with ProcessPoolExecutor(options.workers, mp_context=context, initializer=scorer.start,
                             initargs=initargs) as pool:  # fmt: skip
        window: deque[tuple[Part, Future[Scored]]] = deque()
        for part in parts:
            columns = part.columns(names)
            window.append((part, pool.submit(scorer.score_part, sources, columns, part.rows,
                                             options.batch_rows)))  # fmt: skip
            while len(window) > options.workers:
                done, future = window.popleft()
                yield done, future.result()
        while window:
            done, future = window.popleft()
            yield done, future.result()


def _write_errors(out: Folder, part: Part, result: Scored) -> None:
    """``errors-NNNNN.jsonl``: one line per failed row (its input row number, the reason),
    written whole before the ledger counts the part."""
    if not result.errors:
        return
    lines = (
        orjson.dumps({"row": part.first + offset, "error": result.errors[offset]}) + b"\n"
        for offset in sorted(result.errors)
    )
    out.write(f"errors-{part.index:05d}.jsonl", b"".join(lines))


def _over(limit: float | None, state: Ledger) -> str | None:
    if limit is None or not state.errors:
        return None
    if limit >= 1 and state.errors > limit:
        return f"{state.errors} rows failed, more than --max-errors {int(limit)}"
    if limit < 1 and state.errors / max(state.rows, 1) > limit:
        return (f"{state.errors} of {state.rows} rows failed ({state.errors / state.rows:.1%}), "
                f"more than --max-errors {limit:g}")  # fmt: skip
    return None
