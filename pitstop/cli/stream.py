"""``pitstop stream``: a model scoring a stream of messages (docs/streaming.md)."""

from __future__ import annotations

import asyncio
import logging
import signal
from functools import partial
from typing import Any

import click
from pydantic import ValidationError

from pitstop.cli.context import Context, column_mapping, pass_context
from pitstop.cli.server import hosted_streams
from pitstop.engine import Engine
from pitstop.errors import InvalidInput
from pitstop.monitoring import logs
from pitstop.settings import Settings, StreamSettings
from pitstop.transports.app import serve as run_server

log = logging.getLogger(__name__)


@click.command()
@click.argument("model")
@click.option("--from", "source", required=True, metavar="URL",
              help="nats://HOST:PORT/SUBJECT (a JetStream stream stores it) or "
                   "redis://HOST:PORT/STREAM.")  # fmt: skip
@click.option("--to", required=True, metavar="URL", help="Where answers go (same server).")
@click.option("--dead-letter", metavar="URL", help="Where failed messages go (default: --to "
              "with .dead appended).")  # fmt: skip
@click.option("--version", "version", help="A version number or alias to pin (default: the "
              "model's traffic policy, canaries included).")  # fmt: skip
@click.option("--group", help="Durable consumer / consumer group shared by every consumer "
              "(default pitstop-MODEL).")  # fmt: skip
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "v2", "record"]),
    default="auto",
    show_default=True,
    help="V2 inference requests, or flat JSON records.",
)
@click.option("--column", "columns", multiple=True, metavar="INPUT=FIELD[,FIELD...]",
              help="Records: feed a model input from these fields.")  # fmt: skip
@click.option("--keep", help="Records: comma-separated fields copied to the answers.")
@click.option("--batch-size", type=int, help="Most messages per model call (default 64).")
@click.option("--max-wait-ms", type=float, help="Longest a batch waits to fill (default 5).")
@click.option("--in-flight", type=int, help="Batches in flight at once (default 4).")
@click.option("--max-deliver", type=int, help="Deliveries before a failing message is "
              "dead-lettered (default 5).")  # fmt: skip
@click.option("--backoff", "backoff_s", type=float, help="Seconds before the first retry of "
              "a message whose model call failed; doubles per delivery (default 1).")  # fmt: skip
@click.option("--ack-wait", "ack_wait_s", type=float, help="Seconds before an unacknowledged "
              "message goes to another consumer (default 30).")  # fmt: skip
@click.option("--listen", is_flag=True, help="Also serve HTTP and gRPC (metrics, health, "
              "inference) on the usual ports, as pitstop serve does.")  # fmt: skip
@pass_context
def stream(ctx: Context, /, model: str, listen: bool, **options: Any) -> None:
    """Score MODEL on every message of a NATS JetStream subject or a Redis stream; answers and
    dead letters go back to the broker. Runs until SIGTERM/SIGINT, then finishes and
    acknowledges what is in flight."""
    spec = _spec(model, options)
    settings = ctx.settings.model_copy(update={"streams": [spec]})
    if listen:
        run_server(settings, [partial(hosted_streams, settings)])
        return
    stop_logging = logs.configure(settings.log_format, settings.log_level)
    try:
        asyncio.run(consume(settings))
    finally:
        stop_logging()


OPTIONS = {"ack_wait_s": "--ack-wait", "backoff_s": "--backoff", "fmt": "--format",
           "format": "--format", "columns": "--column", "model": "MODEL"}  # fmt: skip
"""The option of each StreamSettings field whose name differs from it."""


def _spec(model: str, options: dict[str, Any]) -> StreamSettings:
    fields: dict[str, Any] = {"model": model}
    columns = column_mapping(options.pop("columns"))
    if columns:
        fields["columns"] = columns
    keep = options.pop("keep")
    if keep:
        fields["keep"] = [k for k in keep.split(",") if k]
    fields["format"] = options.pop("fmt")
    fields.update({k: v for k, v in options.items() if v is not None})
    try:
        return StreamSettings.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "model"
        option = OPTIONS.get(field, "--" + field.replace("_", "-"))
        raise InvalidInput(f"{option}: {first['msg']}") from None


async def consume(settings: Settings) -> None:
    """The Engine and the stream consumers, until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Engine(settings) as engine:
        host = hosted_streams(settings, engine)
        await host.start()
        log.info("consuming; SIGTERM or SIGINT stops after the messages in flight")
        waiting = asyncio.create_task(host.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        engine.begin_drain()
        await host.close()
        waiting.cancel()
        if not host.drained:
            raise SystemExit(1)
        log.info("stopped: every message in flight was answered and acknowledged")


def register(group: click.Group) -> None:
    group.add_command(stream)
