"""``pitstop status`` and ``pitstop history``: what serves now, and what served when."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from pitstop.cli.context import (
    Context,
    json_option,
    out,
    pass_context,
    plain,
    print_json,
    v,
    when,
)
from pitstop.cli.delivery import duration_s
from pitstop.registry import (
    AuditEvent,
    Registry,
    TimelineEntry,
    acknowledgement,
    replay,
    served_at,
)
from pitstop.registry.status import StatusRow, status_rows


@click.command()
@click.argument("model", required=False)
@json_option
@pass_context
def status(ctx: Context, model: str | None, as_json: bool) -> None:
    """What each model serves right now: alias → version, digest, state, since when, per
    replica; and how many live replicas have applied the registry's latest change."""
    with ctx.registry() as registry:
        rows = _status_rows(registry, model)
        live = registry.replicas.live(ctx.settings.replica_timeout_s)
        applied = acknowledgement(registry.generation(), live)
    if as_json:
        print_json(rows)
        return
    table = Table("MODEL", "ALIAS", "TARGET", "SERVING", "DIGEST", "STATE", "SINCE", "REPLICA")
    for row in rows:
        state = row.state + (f": {row.error}" if row.error else "")
        table.add_row(
            row.model,
            row.alias,
            v(row.target),
            v(row.serving),
            (row.digest or "")[:19],
            state,
            when(row.since),
            row.replica or "",
        )
    out.print(table)
    out.print(f"registry generation {applied.generation}: {applied} (pitstop replicas)")


@click.command()
@json_option
@pass_context
def replicas(ctx: Context, as_json: bool) -> None:
    """The live servers of this registry: host, pid, since when, last heartbeat, and whether
    each has applied the registry's latest change (its aliases served or FAILED)."""
    with ctx.registry() as registry:
        live = registry.replicas.live(ctx.settings.replica_timeout_s)
        applied = acknowledgement(registry.generation(), live)
    if as_json:
        print_json(
            {
                "generation": applied.generation,
                "applied": applied.applied,
                "live": applied.live,
                "replicas": [plain(replica) for replica in live],
            }
        )
        return
    table = Table("REPLICA", "HOST", "PID", "VERSION", "STARTED", "HEARTBEAT", "APPLIED")
    for replica in live:
        current = replica.applied_generation >= applied.generation
        table.add_row(
            replica.name, replica.host, str(replica.pid), replica.software,
            when(replica.started_at), when(replica.heartbeat_at),
            f"{replica.applied_generation}" + ("" if current else " (behind)"),
        )  # fmt: skip
    out.print(table)
    out.print(f"registry generation {applied.generation}: {applied}")


@click.command()
@click.argument("model", required=False)
@click.option("--limit", type=int, default=50, show_default=True, help="Newest N events.")
@click.option("--since", help="Only changes since: a duration (24h, 30m) or a time.")
@click.option("--at", "at_text", help="What served MODEL at this time ('2026-11-21 14:00').")
@json_option
@pass_context
def history(
    ctx: Context,
    model: str | None,
    limit: int,
    since: str | None,
    at_text: str | None,
    as_json: bool,
) -> None:
    """Every registry change, who/when/what/why, newest first. With MODEL, each change shows
    the traffic split it left behind (which versions served which share); --at answers
    "what served at that time?"."""
    with ctx.registry() as registry:
        events = registry.history(model, limit=None if model else limit)
    entries = replay(events) if model else []
    if at_text is not None:
        if model is None:
            raise click.UsageError("--at needs a MODEL")
        _print_served_at(model, entries, _time(at_text), as_json)
        return
    cutoff = _time(since) if since else None
    events = [e for e in events if cutoff is None or e.at >= cutoff][:limit]
    serving = {e.event.id: _shares(e.shares) for e in entries}
    if as_json:
        print_json([{**plain(e), "serving": serving.get(e.id)} for e in events])
        return
    table = Table("WHEN", "ACTOR", "ACTION", "MODEL", "WHAT", "SERVING AFTER", "REASON")
    for event in events:
        table.add_row(
            when(event.at),
            event.actor,
            event.action,
            event.model or "",
            _what(event),
            serving.get(event.id, ""),
            event.reason or "",
        )
    out.print(table)


def _print_served_at(model: str, entries: list[TimelineEntry], at: datetime, as_json: bool) -> None:
    entry = served_at(entries, at)
    if as_json:
        print_json(
            None if entry is None else {
                "model": model, "at": at.isoformat(), "since": entry.at.isoformat(),
                "shares": {str(v): s for v, s in entry.shares.items()},
                "shadows": {str(v): r for v, r in entry.shadows.items()},
                "aliases": entry.aliases, "set_by": plain(entry.event),
            }
        )  # fmt: skip
        return
    if entry is None:
        out.print(f"{model} served nothing at {when(at)} (no alias yet)")
        return
    out.print(f"{model} at {when(at)}: {_shares(entry.shares) or 'nothing'}")
    if entry.shadows:
        out.print("  shadows: " + ", ".join(f"v{v} at {r:g}" for v, r in entry.shadows.items()))
    event = entry.event
    reason = f" — {event.reason}" if event.reason else ""
    out.print(f"  since {when(entry.at)}: {event.action} by {event.actor}{reason}")


def _shares(shares: dict[int, float]) -> str:
    return " · ".join(f"v{v} {s:g}%" for v, s in sorted(shares.items(), key=lambda i: -i[1]))


def _time(text: str) -> datetime:
    """A duration before now (24h, 30m) or an ISO-like time (local time unless it has a zone)."""
    try:
        return datetime.now(UTC) - timedelta(seconds=duration_s(text))
    except click.BadParameter:
        pass
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a duration (24h) nor a time") from None
    return parsed.astimezone() if parsed.tzinfo is None else parsed


def _status_rows(registry: Registry, model: str | None) -> list[StatusRow]:
    states = registry.serving_states(model)
    models = [m for m in registry.models() if model is None or m.name == model]
    events = registry.history(model, limit=None if model else 5000)
    return status_rows(models, states, events)


def _what(event: AuditEvent) -> str:
    after = event.after or {}
    if event.action == "version.sign":
        return f"v{event.version} signed by {after.get('key_id')} ({after.get('algorithm')})"
    if event.action == "trust.policy":
        keys = after.get("keys")
        return "trusted keys: " + (
            (", ".join(map(str, keys)) or "none") if isinstance(keys, list) else "?"
        )
    parts = []
    if event.alias:
        parts.append(event.alias)
    if event.before is not None or event.after is not None:
        parts.append(f"{_brief(event.before)} → {_brief(event.after)}")
    elif event.version is not None:
        parts.append(f"v{event.version}")
    return " ".join(parts)


def _brief(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, dict) and "version" in value:
        return f"v{value['version']}"
    return json.dumps(value, default=str, sort_keys=True)


def register(group: click.Group) -> None:
    """Add ``status``, ``replicas`` and ``history`` to ``group``."""
    group.add_command(status)
    group.add_command(replicas)
    group.add_command(history)
