"""The rollout judge (a table), the traffic choice, and simulated rollouts under the defaults."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from pitstop.errors import InvalidInput
from pitstop.monitoring.outcome import Tally
from pitstop.registry import Arm, Guard, Shadow, TrafficPolicy
from pitstop.serving.rollout import ArmWindow, Verdict, judge
from pitstop.serving.traffic import choose, shadows_for, sticky_number

G = Guard(min_requests=100, min_errors=8, min_predictions=100)
BASE = ArmWindow(requests=2000, errors=2, p99_ms=30.0, predictions=[0, 1] * 1000)
SAME = [0, 1] * 100

CASES = [
    ("all good mid-rollout", ArmWindow(200, 0, 31.0, SAME), BASE, False, Verdict.STEP_UP),
    ("all good at the last step", ArmWindow(200, 0, 31.0, SAME), BASE, True, Verdict.PROMOTE),
    ("too few requests", ArmWindow(50, 0, 31.0, SAME[:50]), BASE, False, Verdict.HOLD),
    ("100% errors before min_requests", ArmWindow(9, 9, 5.0), BASE, False, Verdict.ROLL_BACK),
    ("few errors before min_requests", ArmWindow(40, 2, 5.0), BASE, False, Verdict.HOLD),
    ("error rate over the limit", ArmWindow(300, 7, 31.0, SAME), BASE, False, Verdict.ROLL_BACK),
    ("error rate within the limit", ArmWindow(200, 3, 31.0, SAME), BASE, False, Verdict.STEP_UP),
    (
        "p99 twice the baseline and more",
        ArmWindow(200, 0, 70.0, SAME),
        BASE,
        False,
        Verdict.ROLL_BACK,
    ),
    (
        "slow ratio under the latency floor",
        ArmWindow(200, 0, 15.0, SAME),
        ArmWindow(2000, 0, 2.0, [0, 1] * 1000),
        False,
        Verdict.STEP_UP,
    ),
    ("predictions shifted", ArmWindow(200, 0, 31.0, [1] * 200), BASE, False, Verdict.ROLL_BACK),
    (
        "too few predictions to judge divergence",
        ArmWindow(200, 0, 31.0, [1] * 50),
        BASE,
        False,
        Verdict.STEP_UP,
    ),
]


@pytest.mark.parametrize(
    ("what", "canary", "baseline", "last", "verdict"), CASES, ids=[c[0] for c in CASES]
)
def test_judge(
    what: str, canary: ArmWindow, baseline: ArmWindow, last: bool, verdict: Verdict
) -> None:
    judgement = judge(canary, baseline, G, last)
    assert judgement.verdict is verdict, judgement.reason
    assert judgement.reason


def simulate(
    rng: np.random.Generator, shift: float, steps=(5, 25, 50, 100), per_step: int = 6000
) -> tuple[Verdict, str]:
    """One rollout: traffic split by the step's weight; both arms from the same world unless
    ``shift`` moves the canary's scores."""
    guard = Guard()
    for index, weight in enumerate(steps):
        n_canary = int(per_step * weight / 100)
        n_base = max(per_step - n_canary, 500)

        def arm(n: int, loc: float) -> ArmWindow:
            errors = int(rng.binomial(n, 0.005))
            latencies = rng.lognormal(mean=np.log(8), sigma=0.4, size=n)
            return ArmWindow(
                n,
                errors,
                float(np.quantile(latencies, 0.99)),
                rng.normal(loc, 1.0, size=n).tolist(),
            )

        judgement = judge(arm(n_canary, shift), arm(n_base, 0.0), guard, index == len(steps) - 1)
        if judgement.verdict in (Verdict.ROLL_BACK, Verdict.PROMOTE):
            return judgement.verdict, judgement.reason
    return Verdict.HOLD, "never finished"


def test_identical_canaries_are_promoted_50_times_out_of_50() -> None:
    rng = np.random.default_rng(7)
    outcomes = Counter(simulate(rng, shift=0.0)[0] for _ in range(50))
    assert outcomes == {Verdict.PROMOTE: 50}


def test_shifted_predictions_are_rolled_back() -> None:
    rng = np.random.default_rng(8)
    results = [simulate(rng, shift=1.0) for _ in range(20)]
    assert all(v is Verdict.ROLL_BACK and "divergence" in r for v, r in results)


def test_guard_from_json_validates() -> None:
    assert Guard.from_json({"min_requests": "50"}).min_requests == 50
    with pytest.raises(InvalidInput, match="unknown setting"):
        Guard.from_json({"max_errors": 1})
    with pytest.raises(InvalidInput):
        Guard.from_json({"min_requests": 0})


POLICY = TrafficPolicy(arms=(Arm("production", 70.0), Arm("staging", 30.0)))


@pytest.mark.parametrize(
    ("u", "arm"), [(0.0, "production"), (0.69, "production"), (0.7, "staging"), (0.999, "staging")]
)
def test_choose_by_uniform_number(u: float, arm: str) -> None:
    assert choose(POLICY, None, u) == arm


def test_sticky_users_always_get_the_same_arm_and_shares_hold() -> None:
    arms = {}
    for user in range(1000):
        seen = {choose(POLICY, f"user-{user}", u) for u in np.linspace(0, 0.99, 10)}
        assert len(seen) == 1
        arms[user] = seen.pop()
    share = Counter(arms.values())["staging"] / 1000
    assert abs(share - 0.30) < 0.03
    assert sticky_number("user-1") == sticky_number("user-1")


def test_zero_weight_arms_never_serve() -> None:
    policy = TrafficPolicy(arms=(Arm("production", 100.0), Arm("4", 0.0)))
    assert {choose(policy, None, u) for u in np.linspace(0, 0.999, 50)} == {"production"}


def test_shadows() -> None:
    policy = TrafficPolicy(shadows=(Shadow("5", 0.5),))
    assert shadows_for(policy, "production", [0.2]) == ["5"]
    assert shadows_for(policy, "production", [0.7]) == []
    assert shadows_for(policy, "5", [0.2]) == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"arms": (Arm("production", 50.0),)}, "add up to 100"),
        ({"arms": (Arm("a", 50.0), Arm("a", 50.0))}, "one arm"),
        ({"shadows": (Shadow("2", 1.5),)}, "shadow rate"),
        ({"arms": (Arm("no way", 100.0),)}, "not an alias"),
        ({"sticky_header": "x user"}, "header"),
    ],
)
def test_invalid_policies(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        TrafficPolicy(**kwargs)


def test_policy_json_round_trip() -> None:
    policy = TrafficPolicy(
        arms=(Arm("production", 95.0), Arm("4", 5.0)),
        shadows=(Shadow("5", 0.1),),
        sticky_header="X-User-Id",
        fallback="2",
    )
    assert TrafficPolicy.from_json(policy.to_json()) == policy
    assert policy.sticky_header == "x-user-id"


# -- the outcome guard ---------------------------------------------------------------------------

OG = Guard(
    min_requests=100, min_errors=8, min_predictions=100, outcome_metric="accuracy",
    outcome_margin=0.05, outcome_min_samples=200,
)  # fmt: skip


def _arm(right: int, n: int) -> ArmWindow:
    return ArmWindow(2000, 0, 30.0, SAME, outcome=Tally(n, float(right), float(right)))


OUTCOME_CASES = [
    # what, canary, baseline, last step, decisive, waited_s, guard, verdict
    ("equal, decisive", _arm(2700, 3000), _arm(2700, 3000), False, True, 0, OG, Verdict.STEP_UP),
    ("equal, last step", _arm(2700, 3000), _arm(2700, 3000), True, True, 0, OG, Verdict.PROMOTE),
    ("surely worse", _arm(2100, 3000), _arm(2700, 3000), False, False, 0, OG, Verdict.ROLL_BACK),
    ("too little feedback", _arm(90, 100), _arm(90, 100), False, False, 0, OG, Verdict.HOLD),
    ("unclear, early step", _arm(216, 240), _arm(216, 240), False, False, 0, OG, Verdict.STEP_UP),
    ("unclear, decisive", _arm(216, 240), _arm(216, 240), False, True, 0, OG, Verdict.HOLD),
    (
        "unclear past the timeout: hold",
        _arm(216, 240), _arm(216, 240), True, True, 60,
        replace(OG, outcome_timeout_s=30), Verdict.HOLD,
    ),
    (
        "unclear past the timeout: roll back",
        _arm(216, 240), _arm(216, 240), True, True, 60,
        replace(OG, outcome_timeout_s=30, outcome_on_timeout="rollback"), Verdict.ROLL_BACK,
    ),
    (
        "lower error is better (mae)",
        ArmWindow(2000, 0, 30.0, SAME, outcome=Tally(3000, 300.0, 60.0)),
        ArmWindow(2000, 0, 30.0, SAME, outcome=Tally(3000, 600.0, 240.0)),
        True, True, 0, replace(OG, outcome_metric="mae"), Verdict.PROMOTE,
    ),
    (
        "higher error is worse (mae)",
        ArmWindow(2000, 0, 30.0, SAME, outcome=Tally(3000, 900.0, 400.0)),
        ArmWindow(2000, 0, 30.0, SAME, outcome=Tally(3000, 300.0, 60.0)),
        False, False, 0, replace(OG, outcome_metric="mae"), Verdict.ROLL_BACK,
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "canary", "baseline", "last", "decisive", "waited", "guard", "verdict"),
    OUTCOME_CASES,
    ids=[c[0] for c in OUTCOME_CASES],
)
def test_outcome_guard(
    what: str,
    canary: ArmWindow,
    baseline: ArmWindow,
    last: bool,
    decisive: bool,
    waited: float,
    guard: Guard,
    verdict: Verdict,
) -> None:
    judgement = judge(canary, baseline, guard, last, waited, decisive)
    assert judgement.verdict is verdict, judgement.reason
    if (
        guard.outcome_metric
        and verdict is not Verdict.STEP_UP
        and "all guards" not in judgement.reason
    ):
        assert judgement.reason.startswith(f"outcome {guard.outcome_metric}"), judgement.reason


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"outcome_metric": "f1"}, "outcome_metric 'f1'"),
        ({"outcome_on_timeout": "promote"}, "outcome_on_timeout"),
        ({"outcome_alpha": 1.5}, "outcome_alpha"),
        ({"outcome_min_samples": 1}, "outcome_min_samples"),
    ],
)
def test_outcome_guard_settings_are_checked(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Guard.from_json(body)


def test_the_guard_names_the_metrics_the_statistics_know() -> None:
    from pitstop.monitoring.outcome import Metric
    from pitstop.registry.rollouts import OUTCOME_METRICS

    assert set(OUTCOME_METRICS) == {m.value for m in Metric}
