"""Progressive delivery in the registry: traffic policies, rollouts and the controller's lease.

:class:`Delivery` shares the catalog's database (``registry.delivery``). Every change bumps the
catalog generation (so servers notice within a poll) and is audited in the same transaction:
``policy.set`` (the whole policy before and after), ``rollout.start|step|promote|rollback|pause|
resume|abort`` (with the reason). Those events are what ``pitstop history --at`` replays.

Rollout states: RUNNING → PROMOTED | ROLLED_BACK | ABORTED, and RUNNING ⇄ PAUSED. At most one
rollout per model is active (RUNNING or PAUSED).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pitstop.errors import Conflict, InvalidInput, NotFound
from pitstop.protocol.reference import natural
from pitstop.registry.aliases import move_alias
from pitstop.registry.audit import append_event, read_events
from pitstop.registry.database import transaction
from pitstop.registry.names import check_actor
from pitstop.registry.policy import DEFAULT_TARGET, Arm, TrafficPolicy
from pitstop.registry.rollouts import (
    ACTIVE,
    TRANSITIONS,
    Guard,
    Rollout,
    RolloutState,
    RolloutVerb,
)
from pitstop.registry.schema import (
    AliasRow,
    LeaseRow,
    ModelRow,
    PolicyRow,
    RolloutRow,
)
from pitstop.registry.views import bump_generation, model_row, version_row

Clock = Callable[[], datetime]


def _rollout(model: str, row: RolloutRow) -> Rollout:
    return Rollout(
        id=row.id, model=model, version=row.version, baseline=row.baseline,
        steps=tuple(row.steps), interval_s=row.interval_s, guard=Guard.from_json(row.guard),
        step=row.step, state=RolloutState(row.state), reason=row.reason, started_at=row.started_at,
        step_started_at=row.step_started_at, updated_at=row.updated_at, created_by=row.created_by,
    )  # fmt: skip


def canary_policy(baseline: TrafficPolicy, version: int, weight: float) -> TrafficPolicy:
    """``baseline`` with ``weight``% moved from ``production`` to ``version``."""
    others = [a for a in baseline.arms if a.target not in (DEFAULT_TARGET, str(version))]
    taken = sum(a.weight for a in others)
    arms = [Arm(DEFAULT_TARGET, max(0.0, 100.0 - taken - weight)), Arm(str(version), weight)]
    return TrafficPolicy(
        arms=tuple(a for a in (*arms, *others) if a.weight > 0) or (Arm(DEFAULT_TARGET, 100.0),),
        shadows=baseline.shadows,
        sticky_header=baseline.sticky_header,
        fallback=baseline.fallback,
        load=baseline.load,
    )


def without_canary(policy: TrafficPolicy, version: int) -> TrafficPolicy:
    """``policy`` with ``version``'s arm given back to ``production``."""
    weight = policy.weight_of(str(version))
    if weight == 0:
        return policy
    arms = [a for a in policy.arms if a.target != str(version)]
    if any(a.target == DEFAULT_TARGET for a in arms):
        arms = [Arm(a.target, a.weight + weight) if a.target == DEFAULT_TARGET else a for a in arms]
    else:
        arms.append(Arm(DEFAULT_TARGET, weight))
    return TrafficPolicy(
        tuple(arms), policy.shadows, policy.sticky_header, policy.fallback, load=policy.load
    )


class Delivery:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    # -- policies ------------------------------------------------------------------------------

    def policy(self, model: str) -> TrafficPolicy:
        with transaction(self._engine, write=False) as session:
            row = session.get(PolicyRow, model_row(session, model).id)
            return TrafficPolicy.from_json(row.policy if row else None)

    def traffic(self, model: str) -> tuple[TrafficPolicy, Rollout | None]:
        """The policy and the newest rollout, read in one snapshot: a rollout that just ended is
        never shown beside the policy of its last step."""
        with transaction(self._engine, write=False, consistent=True) as session:
            row = model_row(session, model)
            stored = session.get(PolicyRow, row.id)
            newest = session.scalars(
                select(RolloutRow)
                .where(RolloutRow.model_id == row.id)
                .order_by(RolloutRow.id.desc())
                .limit(1)
            ).first()
            return (
                TrafficPolicy.from_json(stored.policy if stored else None),
                _rollout(model, newest) if newest is not None else None,
            )

    def policies(self) -> dict[str, TrafficPolicy]:
        """Every model's policy other than the default."""
        with transaction(self._engine, write=False) as session:
            rows = session.execute(
                select(ModelRow.name, PolicyRow.policy).join(
                    PolicyRow, PolicyRow.model_id == ModelRow.id
                )
            ).all()
        found = {name: TrafficPolicy.from_json(body) for name, body in rows}
        return {name: policy for name, policy in found.items() if not policy.is_default}

    def set_policy(
        self,
        model: str,
        policy: TrafficPolicy,
        *,
        actor: str,
        reason: str | None = None,
        expect: TrafficPolicy | None = None,
    ) -> bool:
        """Replace ``model``'s policy (audited ``policy.set``). Version targets must exist.
        With ``expect``, only if the policy in force is that one (a controller never
        overwrites a change made since it read). True if it changed."""
        check_actor(actor)
        with transaction(self._engine, write=True) as session:
            bump_generation(session)
            if not self._write_policy(session, model, policy, actor, reason, expect):
                session.rollback()
                return False
            return True

    def _write_policy(
        self,
        session: Session,
        model: str,
        policy: TrafficPolicy,
        actor: str,
        reason: str | None,
        expect: TrafficPolicy | None = None,
    ) -> bool:
        row = model_row(session, model)
        for target in policy.targets():
            number = natural(target)
            if number is not None:
                version_row(session, row, number)
        current = session.get(PolicyRow, row.id)
        before = TrafficPolicy.from_json(current.policy if current else None)
        if before == policy or (expect is not None and before != expect):
            return False
        now = self._clock()
        if current is None:
            session.add(
                PolicyRow(
                    model_id=row.id, policy=policy.to_json(), updated_at=now, updated_by=actor
                )
            )
        else:
            current.policy, current.updated_at, current.updated_by = policy.to_json(), now, actor
        append_event(
            session, at=now, actor=actor, action="policy.set", model=model,
            before=before.to_json(), after=policy.to_json(), reason=reason,
        )  # fmt: skip
        return True

    # -- rollouts ------------------------------------------------------------------------------

    def start_rollout(
        self,
        model: str,
        version: int,
        *,
        steps: Sequence[float],
        interval_s: float,
        guard: Guard,
        actor: str,
        reason: str | None = None,
    ) -> Rollout:
        """Start sending ``steps[0]``% of ``model``'s traffic to ``version``.

        Conflict if a rollout of the model is already active or ``version`` already serves
        ``production``; NotFound if the model, the version or its ``production`` alias is missing.
        """
        check_actor(actor)
        if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps):
            raise InvalidInput(f"steps: increasing percentages in (0, 100], got {list(steps)}")
        if steps[-1] != 100:
            steps = [*steps, 100.0]
        if interval_s <= 0:
            raise InvalidInput("interval: must be positive")
        with transaction(self._engine, write=True) as session:
            bump_generation(session)
            row = model_row(session, model)
            version_row(session, row, version)
            production = session.get(AliasRow, (row.id, DEFAULT_TARGET))
            if production is None:
                raise NotFound(f"model {model!r} has no production alias to roll out against")
            if production.version_number == version:
                raise Conflict(f"{model} v{version} already serves production")
            if self._active_row(session, row.id) is not None:
                raise Conflict(f"a rollout of {model!r} is already active; abort it first")
            now = self._clock()
            rollout = RolloutRow(
                model_id=row.id, version=version, baseline=production.version_number,
                steps=[float(s) for s in steps], interval_s=float(interval_s),
                guard=guard.to_json(), step=0, state=RolloutState.RUNNING, reason=reason,
                started_at=now, step_started_at=now, updated_at=now, created_by=actor,
            )  # fmt: skip
            session.add(rollout)
            session.flush()
            policy = canary_policy(self._policy_of(session, row.id), version, float(steps[0]))
            self._write_policy(session, model, policy, actor, f"rollout {rollout.id}: start")
            append_event(
                session, at=now, actor=actor, action="rollout.start", model=model,
                version=version, after={"rollout": rollout.id, "weight": steps[0],
                                        "baseline": production.version_number},
                reason=reason,
            )  # fmt: skip
            return _rollout(model, rollout)

    def rollouts(self, model: str | None = None, *, active_only: bool = False) -> list[Rollout]:
        """Rollouts newest first."""
        with transaction(self._engine, write=False) as session:
            query = select(RolloutRow).order_by(RolloutRow.id.desc())
            if model is not None:
                query = query.where(RolloutRow.model_id == model_row(session, model).id)
            if active_only:
                query = query.where(RolloutRow.state.in_(ACTIVE))
            names = {}
            found = []
            for row in session.scalars(query):
                if row.model_id not in names:
                    names[row.model_id] = _model_name(session, row.model_id)
                found.append(_rollout(names[row.model_id], row))
            return found

    def active_rollout(self, model: str) -> Rollout | None:
        found = self.rollouts(model, active_only=True)
        return found[0] if found else None

    def advance(
        self, rollout_id: int, verb: RolloutVerb | str, *, actor: str, reason: str | None = None
    ) -> Rollout:
        """Apply ``verb`` (step, promote, rollback, pause, resume, abort) to a rollout.

        ``step`` moves to the next weight; ``promote`` points ``production`` at the canary and
        returns the policy to 100% production; ``rollback`` and ``abort`` give the canary 0% at
        once. Conflict when the rollout's state does not allow the verb.
        """
        verb = RolloutVerb.parse(verb)
        allowed, target = TRANSITIONS[verb]
        with transaction(self._engine, write=True) as session:
            bump_generation(session)
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                raise NotFound(f"no rollout {rollout_id}")
            model = _model_name(session, row.model_id)
            if row.state not in allowed:
                raise Conflict(f"rollout {rollout_id} of {model!r} is {row.state}; cannot {verb}")
            now = self._clock()
            policy = self._policy_of(session, row.model_id)
            note = f"rollout {rollout_id}: {verb}" + (f" ({reason})" if reason else "")
            if verb is RolloutVerb.STEP:
                if row.step + 1 >= len(row.steps):
                    raise Conflict(f"rollout {rollout_id} is at its last step; promote it")
                row.step += 1
                row.step_started_at = now
                policy = canary_policy(policy, row.version, row.steps[row.step])
            elif verb is RolloutVerb.RESUME:
                row.step_started_at = now
            elif verb in (RolloutVerb.PROMOTE, RolloutVerb.ROLLBACK, RolloutVerb.ABORT):
                if verb is RolloutVerb.PROMOTE:
                    move_alias(session, model_row(session, model), DEFAULT_TARGET, row.version,
                               actor=actor, reason=note, now=now)  # fmt: skip
                policy = without_canary(policy, row.version)
            self._write_policy(session, model, policy, actor, note)
            row.state, row.updated_at = target, now
            if reason is not None:
                row.reason = reason
            append_event(
                session, at=now, actor=actor, action=f"rollout.{verb}", model=model,
                version=row.version,
                after={"rollout": row.id, "state": target, "weight": policy.weight_of(
                    str(row.version))},
                reason=reason,
            )  # fmt: skip
            return _rollout(model, row)

    def rollback(self, model: str, *, actor: str, reason: str | None = None) -> int:
        """Point ``production`` back at the version it served before its current target, abort
        any active rollout of the model (its canary gets 0% at once), and return the version now
        targeted. NotFound when there is no earlier production version."""
        check_actor(actor)
        with transaction(self._engine, write=True) as session:
            bump_generation(session)
            row = model_row(session, model)
            current = session.get(AliasRow, (row.id, DEFAULT_TARGET))
            if current is None:
                raise NotFound(f"model {model!r} has no production alias")
            previous = next(
                (
                    event.before["version"]
                    for event in read_events(session, model)
                    if event.action == "alias.set"
                    and event.alias == DEFAULT_TARGET
                    and isinstance((event.before or {}).get("version"), int)
                    and event.before is not None
                    and event.before["version"] != current.version_number
                ),
                None,
            )
            if previous is None:
                raise NotFound(f"model {model!r} has no earlier production version")
            now = self._clock()
            note = reason or "rollback"
            active = self._active_row(session, row.id)
            policy = self._policy_of(session, row.id)
            if active is not None:
                policy = without_canary(policy, active.version)
                active.state, active.updated_at, active.reason = RolloutState.ABORTED, now, note
                append_event(
                    session, at=now, actor=actor, action="rollout.abort", model=model,
                    version=active.version,
                    after={"rollout": active.id, "state": RolloutState.ABORTED.value},
                    reason=note,
                )  # fmt: skip
            policy = without_canary(policy, current.version_number)
            self._write_policy(session, model, policy, actor, note)
            move_alias(session, row, DEFAULT_TARGET, int(previous), actor=actor, reason=note,
                       now=now)  # fmt: skip
            return int(previous)

    # -- lease ---------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew lease ``name`` for ``holder`` unless another holder's lease is live.

        One short transaction; two replicas racing for a free lease cannot both win.
        """
        now = self._clock()
        expires = now + timedelta(seconds=ttl_s)
        try:
            with transaction(self._engine, write=True) as session:
                row = session.get(LeaseRow, name, with_for_update=True)
                if row is None:
                    session.add(LeaseRow(name=name, holder=holder, expires_at=expires))
                    return True
                if row.holder != holder and row.expires_at > now:
                    return False
                row.holder, row.expires_at = holder, expires
                return True
        except IntegrityError:
            return False  # another replica inserted it first

    def release_lease(self, name: str, holder: str) -> None:
        with transaction(self._engine, write=True) as session:
            row = session.get(LeaseRow, name, with_for_update=True)
            if row is not None and row.holder == holder:
                session.delete(row)

    # -- helpers -------------------------------------------------------------------------------

    def _policy_of(self, session: Session, model_id: int) -> TrafficPolicy:
        row = session.get(PolicyRow, model_id)
        return TrafficPolicy.from_json(row.policy if row else None)

    def _active_row(self, session: Session, model_id: int) -> RolloutRow | None:
        return session.scalar(
            select(RolloutRow).where(RolloutRow.model_id == model_id, RolloutRow.state.in_(ACTIVE))
        )


def _model_name(session: Session, model_id: int) -> str:
    row = session.get(ModelRow, model_id)
    if row is None:
        raise NotFound(f"no model with id {model_id}")
    return row.name
