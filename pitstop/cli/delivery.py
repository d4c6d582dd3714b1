"""``pitstop deploy | rollout | rollback | ab | shadow | fallback | traffic``: progressive
delivery from the command line.

The commands change the registry directly (like every management command); servers apply the
change at their next poll (``PITSTOP_WATCH_INTERVAL_S``, 0.5 s by default), and the rollout
controller inside the servers steps, promotes or rolls back. ``register(group)`` adds them to the
``pitstop`` group; the group's context object provides ``registry()``, ``actor`` and ``settings``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Protocol

import click
from rich.console import Console
from rich.table import Table

from pitstop.errors import InvalidInput, NotFound
from pitstop.registry import (
    DEFAULT_TARGET,
    Arm,
    Guard,
    Registry,
    Rollout,
    RolloutVerb,
    Shadow,
    TrafficPolicy,
)
from pitstop.settings import Settings

out = Console()
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class CliContext(Protocol):
    """What the ``pitstop`` group's context object provides."""

    settings: Settings

    @property
    def actor(self) -> str: ...

    def registry(self) -> AbstractContextManager[Registry]: ...


def duration_s(text: str) -> float:
    """``"60s"``, ``"5m"``, ``"1.5h"``, ``"2d"`` or plain seconds → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 60s, 5m, 1h or 2d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _steps(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list like 5,25,50,100") from None


def _print_rollout(rollout: Rollout | None) -> None:
    if rollout is None:
        out.print("no rollout")
        return
    table = Table("ROLLOUT", "VERSION", "BASELINE", "STATE", "WEIGHT", "STEPS", "INTERVAL",
                  "STEP SINCE", "REASON")  # fmt: skip
    table.add_row(
        str(rollout.id), f"v{rollout.version}", f"v{rollout.baseline}", rollout.state,
        f"{rollout.weight:g}%", ",".join(f"{s:g}" for s in rollout.steps),
        f"{rollout.interval_s:g}s", rollout.step_started_at.astimezone().strftime("%H:%M:%S"),
        rollout.reason or "",
    )  # fmt: skip
    out.print(table)


def register(group: click.Group) -> None:
    """Add the delivery commands to ``group``."""
    for command in (deploy, rollout, rollback, ab, shadow, fallback, traffic, load_policy):
        group.add_command(command)


@click.command()
@click.argument("model")
@click.option("--version", "version", type=int, required=True, help="The canary version.")
@click.option("--steps", help="Canary weights in percent (default PITSTOP_ROLLOUT_STEPS).")
@click.option("--interval", help="Time per step, e.g. 60s (default PITSTOP_ROLLOUT_INTERVAL).")
@click.option("--max-error-rate", type=float, help="Roll back above this error rate (0.02).")
@click.option("--max-p99-ratio", type=float, help="Roll back above this p99 / baseline p99 (2).")
@click.option("--max-divergence", type=float, help="Roll back above this prediction PSI (0.25).")
@click.option("--min-requests", type=int, help="Requests per step before judging (200).")
@click.option("--reason", help="Why, for the audit history.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def deploy(
    ctx: CliContext, model: str, version: int, steps: str | None, interval: str | None,
    max_error_rate: float | None, max_p99_ratio: float | None, max_divergence: float | None,
    min_requests: int | None, reason: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Roll VERSION of MODEL out step by step, judged by the guards at every step."""
    settings = ctx.settings
    chosen = {
        "max_error_rate": max_error_rate,
        "max_p99_ratio": max_p99_ratio,
        "max_divergence": max_divergence,
        "min_requests": min_requests,
    }
    guard = Guard.from_json({k: v for k, v in chosen.items() if v is not None})
    with ctx.registry() as registry:
        started = registry.delivery.start_rollout(
            model,
            version,
            steps=_steps(steps or settings.rollout_steps),
            interval_s=duration_s(interval or settings.rollout_interval),
            guard=guard,
            actor=ctx.actor,
            reason=reason,
        )
    if as_json:
        click.echo(json.dumps(started.to_json(), indent=2))
        return
    out.print(f"rollout {started.id}: {model} v{version} gets {started.weight:g}% "
              f"(baseline v{started.baseline})")  # fmt: skip


@click.group()
def rollout() -> None:
    """Inspect and steer a model's rollout."""


@rollout.command("status")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rollout_status(ctx: CliContext, model: str, as_json: bool) -> None:
    """The model's newest rollout."""
    with ctx.registry() as registry:
        found = registry.delivery.rollouts(model)
    latest = found[0] if found else None
    if as_json:
        click.echo(json.dumps(latest.to_json() if latest is not None else None, indent=2))
        return
    _print_rollout(latest)


def _steer(verb: RolloutVerb) -> click.Command:
    @click.command(verb, help=f"{verb.capitalize()} the model's active rollout.")
    @click.argument("model")
    @click.option("--reason", help="Why, for the audit history.")
    @click.pass_obj
    def command(ctx: CliContext, model: str, reason: str | None) -> None:
        with ctx.registry() as registry:
            active = registry.delivery.active_rollout(model)
            if active is None:
                raise NotFound(f"model {model!r} has no active rollout")
            updated = registry.delivery.advance(active.id, verb, actor=ctx.actor, reason=reason)
        out.print(f"rollout {updated.id} of {model}: {updated.state}")

    return command


for _verb in (RolloutVerb.PAUSE, RolloutVerb.RESUME, RolloutVerb.ABORT):
    rollout.add_command(_steer(_verb))


@click.command()
@click.argument("model")
@click.option("--reason", help="Why, for the audit history.")
@click.pass_obj
def rollback(ctx: CliContext, model: str, reason: str | None) -> None:
    """Point production back at the previous production version, now (aborts any rollout)."""
    with ctx.registry() as registry:
        version = registry.delivery.rollback(model, actor=ctx.actor, reason=reason)
    out.print(f"{model}: production → v{version}")


def _update_policy(ctx: CliContext, model: str, reason: str | None, change: Any) -> None:
    with ctx.registry() as registry:
        delivery = registry.delivery
        if delivery.active_rollout(model) is not None:
            raise InvalidInput(f"a rollout of {model!r} is active; pause or abort it first")
        policy = change(delivery.policy(model))
        delivery.set_policy(model, policy, actor=ctx.actor, reason=reason)
    out.print(_describe(policy))


def _describe(policy: TrafficPolicy) -> str:
    parts = [" + ".join(f"{a.target} {a.weight:g}%" for a in policy.arms)]
    if policy.sticky_header:
        parts.append(f"sticky on {policy.sticky_header}")
    for item in policy.shadows:
        parts.append(f"shadow {item.target} at {item.rate:g}")
    if policy.fallback:
        parts.append(f"fallback {policy.fallback}")
    if policy.load:
        parts.append(f"loads {policy.load}")
    return "; ".join(parts)


@click.group()
def ab() -> None:
    """Weighted A/B splits, optionally sticky per user."""


@ab.command("set")
@click.argument("model")
@click.argument("arms", nargs=-1, required=True)
@click.option("--sticky", help="Header whose value keeps a user on one arm, e.g. x-user-id.")
@click.option("--reason", help="Why, for the audit history.")
@click.pass_obj
def ab_set(ctx: CliContext, model: str, arms: Sequence[str], sticky: str | None,
           reason: str | None) -> None:  # fmt: skip
    """Split MODEL's traffic: ARMS like production=90 staging=10 (or 4=10, a version)."""
    parsed = []
    for arm in arms:
        target, sep, weight = arm.partition("=")
        try:
            parsed.append(Arm(target, float(weight)))
        except ValueError:
            raise click.BadParameter(f"{arm!r} is not TARGET=WEIGHT") from None
        if not sep:
            raise click.BadParameter(f"{arm!r} is not TARGET=WEIGHT")
    _update_policy(ctx, model, reason, lambda p: replace(  # weights set by hand: no bandit
        p, arms=tuple(parsed), sticky_header=sticky, bandit=None))  # fmt: skip


@ab.command("clear")
@click.argument("model")
@click.option("--reason", help="Why, for the audit history.")
@click.pass_obj
def ab_clear(ctx: CliContext, model: str, reason: str | None) -> None:
    """Send all of MODEL's traffic to production again."""
    _update_policy(ctx, model, reason, lambda p: replace(
        p, arms=(Arm(DEFAULT_TARGET, 100.0),), sticky_header=None, bandit=None))  # fmt: skip


@click.group()
def shadow() -> None:
    """Copy requests to another version, compare, never answer with it."""


@shadow.command("set")
@click.argument("model")
@click.argument("target")
@click.option("--rate", type=float, default=1.0, show_default=True, help="Fraction copied.")
@click.option("--reason", help="Why, for the audit history.")
@click.pass_obj
def shadow_set(ctx: CliContext, model: str, target: str, rate: float, reason: str | None) -> None:
    """Copy RATE of MODEL's requests to TARGET (an alias or a version number)."""

    def change(p: TrafficPolicy) -> TrafficPolicy:
        kept = tuple(s for s in p.shadows if s.target != target)
        return replace(p, shadows=(*kept, Shadow(target, rate)))

    _update_policy(ctx, model, reason, change)


@shadow.command("clear")
@click.argument("model")
@click.argument("target", required=False)
@click.option("--reason", help="Why, for the audit history.")
@click.pass_obj
def shadow_clear(ctx: CliContext, model: str, target: str | None, reason: str | None) -> None:
    """Stop shadowing TARGET (or every shadow)."""

    def change(p: TrafficPolicy) -> TrafficPolicy:
        kept = tuple(s for s in p.shadows if target is not None and s.target != target)
        return replace(p, shadows=kept)

    _update_policy(ctx, model, reason, change)


@click.command()
@click.argument("model")
@click.argument("target", required=False)
@click.option("--clear", is_flag=True, help="Remove the fallback.")
@click.option("--reason", help="Why, for the audit history.")
@click.pass_obj
def fallback(ctx: CliContext, model: str, target: str | None, clear: bool,
             reason: str | None) -> None:  # fmt: skip
    """Answer from TARGET when the chosen version errors, is overloaded or misses its deadline."""
    if (target is None) != clear:
        raise click.UsageError("give a TARGET or --clear")
    _update_policy(ctx, model, reason, lambda p: replace(
        p, fallback=None if clear else target))  # fmt: skip


@click.command("load-policy")
@click.argument("model")
@click.argument("policy", type=click.Choice(["always", "on-demand", "default"]))
@click.option("--reason", help="Why, for the audit history.")
@click.pass_obj
def load_policy(ctx: CliContext, model: str, policy: str, reason: str | None) -> None:
    """When MODEL's versions load: always (at start, kept), on-demand (at the first request
    that needs one, evicted least recently used when memory is needed), or default (the
    server's PITSTOP_LOAD_POLICY)."""
    _update_policy(ctx, model, reason, lambda p: replace(
        p, load=None if policy == "default" else policy))  # fmt: skip


@click.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def traffic(ctx: CliContext, model: str, as_json: bool) -> None:
    """MODEL's traffic policy and newest rollout."""
    with ctx.registry() as registry:
        policy, rollout = registry.delivery.traffic(model)
    if as_json:
        body = {"policy": policy.to_json(), "rollout": rollout.to_json() if rollout else None}
        click.echo(json.dumps(body, indent=2))
        return
    out.print(_describe(policy))
    _print_rollout(rollout)
