"""``pitstop batch --engine ray``: the same scoring on a Ray cluster, with Ray Data (the only
module that imports ray; ``pip install 'pitstop[ray]'``).

Ray's own readers (Parquet, CSV) read the input, ``map_batches`` hands record batches to a pool
of actors, each holding the version's runtime (:class:`~pitstop.batch.scorer.Scorer`: it
fetches the version through the registry and verifies it on its own node, as a server does),
and Ray's writers write the scored rows — the same columns, rows and order as the local engine
(``preserve_order``). Failed rows go to ``errors-ray-<actor>.jsonl`` files with the reason and
the kept columns (Ray's blocks carry no global row number). Actors restart and their tasks are
retried when a worker dies (``max_restarts``/``max_task_retries`` unbounded). Local paths must
be visible to every node (a shared file system), as for any Ray job.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from pitstop.batch.scorer import Scorer
from pitstop.batch.table import Folder, Input, Part, csv_options, output_table
from pitstop.errors import InvalidInput
from pitstop.protocol.columns import Source
from pitstop.registry import Registry
from pitstop.registry.s3_store import Prefix, connection_options
from pitstop.settings import Settings


@dataclass(frozen=True)
class Work:
    """What every actor does: score with ``model`` v``version``, the columns ``sources`` name,
    ``batch_rows`` rows per runtime call, keeping ``keep`` and adding ``stamp``."""

    model: str
    version: int
    sources: tuple[Source, ...]
    keep: tuple[str, ...]
    stamp: dict[str, str]
    batch_rows: int


class _Actor:
    """One Ray actor: a runtime of the version, scoring Arrow batches."""

    def __init__(self, settings: dict[str, Any], work: Work, output: str) -> None:
        configured = Settings(**settings)
        with Registry.from_settings(configured) as registry:
            record = registry.version(work.model, work.version)
            folder = registry.fetch(record)
        self._scorer = Scorer(folder, record.manifest, trust_pickle=record.trust_pickle,
                              trust_code=record.trust_code)  # fmt: skip
        self._work = work
        style = configured.s3_addressing_style
        self._out = Folder(output, partial(connection_options, style),
                           partial(Prefix, addressing_style=style))  # fmt: skip
        self._name = f"errors-ray-{uuid.uuid4().hex[:12]}"
        self._calls = 0

    def __call__(self, table: Any) -> Any:
        if table.num_rows == 0:
            return table
        work = self._work
        part = Part(0, 0, table.combine_chunks())
        names = [c for s in work.sources for c in s.columns]
        scored = self._scorer.score(work.sources, part.columns(names), part.rows, work.batch_rows)
        if scored.errors:  # one file per call: S3 cannot append
            kept = part.batch.select(list(work.keep)).to_pylist() if work.keep else None
            lines = (
                orjson.dumps({"error": scored.errors[offset],
                              **({"row": kept[offset]} if kept is not None else {})},
                             default=str) + b"\n"
                for offset in sorted(scored.errors)
            )  # fmt: skip
            self._calls += 1
            self._out.write(f"{self._name}-{self._calls:06d}.jsonl", b"".join(lines))
        return output_table(part.batch, work.keep, scored.ok, scored.outputs, work.stamp)


def run_on_ray(
    settings: Settings,
    work: Work,
    *,
    address: str,
    source: Input,
    output: Folder,
    output_format: str,
    concurrency: int,
    actor_cpus: float,
) -> None:
    """Do ``work`` on ``source`` (files of one format) into ``output`` on the cluster at
    ``address`` (see the module docstring)."""
    import ray

    fmt = source.formats[0]
    if fmt not in ("parquet", "csv"):
        raise InvalidInput("--engine ray reads Parquet or CSV (JSON Lines: use --engine local)")
    shared = settings.model_dump(mode="json", exclude={"admin_token"})
    shared["home"] = str(settings.home.resolve())  # actors may start elsewhere
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address=address, log_to_driver=False, configure_logging=False,
             ignore_reinit_error=True)  # fmt: skip
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        on_disk = source.filesystem is None
        paths = [str(Path(p).resolve()) for p in source.files] if on_disk else source.files
        text = frozenset(c for s in work.sources for c in s.columns)
        dataset = (
            ray.data.read_parquet(paths, filesystem=source.filesystem) if fmt == "parquet"
            else ray.data.read_csv(paths, filesystem=source.filesystem,
                                   convert_options=csv_options(text))
        )  # fmt: skip
        place = output.local()
        scored = dataset.map_batches(
            _Actor,
            fn_constructor_args=(
                shared,
                work,
                str(place.resolve()) if place is not None else output.uri,
            ),
            batch_format="pyarrow",
            batch_size=max(work.batch_rows, 1024),
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=actor_cpus,
            max_restarts=-1,
            max_task_retries=-1,
        )
        target = str(place.resolve()) if place is not None else output.path
        if output_format == "parquet":
            scored.write_parquet(target, filesystem=output.filesystem)
        else:
            scored.write_json(target, filesystem=output.filesystem)
    finally:
        ray.shutdown()
