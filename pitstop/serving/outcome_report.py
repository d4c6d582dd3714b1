"""Online outcome metrics per version and arm, and the A/B report, from the registry's sums.

:func:`tally_of` turns one (version, arm)'s :class:`~pitstop.registry.OutcomeSums` into the
:class:`~pitstop.monitoring.outcome.Tally` of a metric; :func:`outcomes` estimates every metric
that has feedback (with a confidence interval) per version and arm; :func:`ab_report` compares
each arm of a traffic policy with its first arm (the control) on every metric both have, with
the sequential test of :mod:`pitstop.serving.comparison`. Pure: the callers read the sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pitstop.monitoring.outcome import Estimate, Metric, Tally, estimate
from pitstop.registry import Outcomes, OutcomeSums
from pitstop.serving.comparison import Design, compare


def tally_of(metric: Metric, sums: OutcomeSums) -> Tally:
    """The observations of ``metric`` in ``sums`` (see Tally for what x is per metric)."""
    if metric in (Metric.ACCURACY, Metric.ERROR_RATE):
        return Tally(sums.labels, float(sums.correct), float(sums.correct))
    if metric is Metric.MAE:
        return Tally(sums.values, sums.abs_error, sums.sq_error)
    if metric is Metric.RMSE:
        return Tally(sums.values, sums.sq_error, sums.sq_error_sq)
    if metric is Metric.MEAN_REWARD:
        return Tally(sums.rewards, sums.reward, sums.reward_sq)
    return Tally(sums.rewards, float(sums.conversions), float(sums.conversions))


def tally_over(metric: Metric, rows: Iterable[OutcomeSums]) -> Tally:
    total = Tally()
    for row in rows:
        total = total + tally_of(metric, row)
    return total


def outcomes(rows: Sequence[OutcomeSums], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per (version, arm): the feedback counts and each metric with feedback, estimated."""
    found = []
    for row in rows:
        metrics = {
            metric.value: estimate(metric, tally, confidence).to_json()
            for metric in Metric
            if (tally := tally_of(metric, row)).n > 0
        }
        found.append({
            "version": row.version, "arm": row.arm,
            "feedback": {"labels": row.labels, "values": row.values, "rewards": row.rewards},
            "metrics": metrics,
        })  # fmt: skip
    return found


def ab_report(
    rows: Sequence[OutcomeSums],
    arms: Sequence[str],
    design: Design,
    metrics: Sequence[Metric] = (),
) -> list[dict[str, Any]]:
    """Each arm after the first compared with the first (the control), on ``metrics`` (default:
    every metric both arms have feedback for). Rows of every version an arm served count for
    that arm."""
    if len(arms) < 2:
        return []
    control = arms[0]
    by_arm = {arm: [row for row in rows if row.arm == arm] for arm in arms}
    report = []
    for arm in arms[1:]:
        chosen = list(metrics) or [
            metric
            for metric in Metric
            if tally_over(metric, by_arm[control]).n and tally_over(metric, by_arm[arm]).n
        ]
        comparisons = [
            compare(
                metric, tally_over(metric, by_arm[control]), tally_over(metric, by_arm[arm]), design
            ).to_json()
            for metric in chosen
        ]
        versions = sorted({row.version for row in by_arm[arm]})
        report.append({"a": control, "b": arm, "b_versions": versions, "comparisons": comparisons})
    return report


def every_estimate(store: Outcomes) -> list[tuple[str, int, str, Estimate]]:
    """(model, version, arm, estimate) of every metric with feedback, for every model.
    Blocking (reads the registry)."""
    found = []
    for model in store.models():
        for row in store.sums(model):
            for metric in Metric:
                tally = tally_of(metric, row)
                if tally.n:
                    found.append((model, row.version, row.arm, estimate(metric, tally)))
    return found
