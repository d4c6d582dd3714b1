"""``pitstop follow mlflow``'s decision, over snapshots: a table."""

from __future__ import annotations

import pytest

from pitstop.errors import InvalidInput
from pitstop.packaging.mlflow_import import Import, Move, Rule, Step, fresh_versions, plan

CHAMPION = Rule("champion", "production")
CHALLENGER = Rule("challenger", "staging")


@pytest.mark.parametrize(
    ("rules", "targets", "known", "aliases", "failed", "steps"),
    [
        # MLflow points at a version pitstop has not imported: import it (moves come after).
        ([CHAMPION], {"champion": "3"}, {}, {}, set(), [Import("3")]),
        # Imported, alias elsewhere: move it.
        ([CHAMPION], {"champion": "3"}, {"3": 7}, {"production": 6}, set(),
         [Move("production", 7, "champion", "3")]),
        # Already there: nothing.
        ([CHAMPION], {"champion": "3"}, {"3": 7}, {"production": 7}, set(), []),
        # MLflow's alias is gone: pitstop's stays where it is.
        ([CHAMPION], {"champion": None}, {"3": 7}, {"production": 7}, set(), []),
        # A version that failed to import is never retried nor pointed at.
        ([CHAMPION], {"champion": "4"}, {"3": 7}, {"production": 7}, {"4"}, []),
        # Two rules on one new version: one import.
        ([CHAMPION, Rule("champion", "canary")], {"champion": "5"}, {}, {}, set(), [Import("5")]),
        # Two rules, one to import and one to move.
        ([CHAMPION, CHALLENGER], {"champion": "3", "challenger": "4"}, {"3": 1}, {}, set(),
         [Import("4"), Move("production", 1, "champion", "3")]),
    ],
)  # fmt: skip
def test_plan(
    rules: list[Rule],
    targets: dict[str, str | None],
    known: dict[str, int],
    aliases: dict[str, int],
    failed: set[str],
    steps: list[Step],
) -> None:
    assert plan(rules, targets, known, aliases, frozenset(failed)) == steps


def test_fresh_versions_are_imported_ahead_of_their_promotion() -> None:
    ready = ["1", "2", "3", "4"]
    # Newer than anything imported or aliased; never an old registry's whole history.
    assert fresh_versions(ready, {"2": 5}, {"champion": "2"}) == ["3", "4"]
    assert fresh_versions(ready, {}, {"champion": "3"}) == ["4"]
    assert fresh_versions(ready, {}, {"champion": None}) == []
    assert plan(
        [CHAMPION], {"champion": "2"}, {"2": 5}, {"production": 5}, frozenset(), ["3", "4"]
    ) == [
        Import("3"),
        Import("4"),
    ]
    # A fresh version that failed is not retried; one also aliased is imported once.
    assert plan([CHAMPION], {"champion": "4"}, {}, {}, frozenset({"3"}), ["3", "4"]) == [
        Import("4")
    ]


def test_rule_parsing() -> None:
    assert Rule.parse("champion=production") == CHAMPION
    assert Rule.parse("champion") == Rule("champion", "champion")
    for bad in ["=production", "champion="]:
        with pytest.raises(InvalidInput, match="MLFLOW_ALIAS=PITSTOP_ALIAS"):
            Rule.parse(bad)
