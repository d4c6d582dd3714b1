"""What every ``pitstop`` command shares: the context object (settings, actor, registry) and
output helpers (tables on a terminal, JSON with ``--json``, one-line errors)."""

from __future__ import annotations

import dataclasses
import getpass
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from pitstop.protocol.plain import plain as plain
from pitstop.registry import Registry
from pitstop.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)


@dataclasses.dataclass
class Context:
    settings: Settings

    @property
    def actor(self) -> str:
        return self.settings.actor or getpass.getuser()

    @contextmanager
    def registry(self) -> Iterator[Registry]:
        registry = Registry.from_settings(self.settings)
        try:
            yield registry
        finally:
            registry.close()


pass_context = click.make_pass_decorator(Context)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


@contextmanager
def progress(label: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    if quiet or not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def print_json(value: Any) -> None:
    click.echo(json.dumps(plain(value), indent=2, default=str))


def v(number: int | None) -> str:
    return "" if number is None else f"v{number}"


def when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def column_mapping(values: Sequence[str]) -> dict[str, list[str]]:
    """``--column INPUT=COL[,COL...]`` options (``pitstop batch``, ``pitstop stream``) as
    ``{input: [column, ...]}``."""
    mapping: dict[str, list[str]] = {}
    for value in values:
        name, sep, cols = value.partition("=")
        names = [c.strip() for c in cols.split(",") if c.strip()]
        if not sep or not name or not names:
            raise click.BadParameter(
                f"{value!r}: expected INPUT=COL[,COL...]", param_hint="--column"
            )
        mapping[name] = names
    return mapping
