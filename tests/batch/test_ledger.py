"""The run manifest refuses a resume that would not reproduce the first run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pitstop.batch.ledger import FIXED, Ledger, load
from pitstop.batch.table import Folder
from pitstop.errors import Conflict

BASE = Ledger(
    model="m", version=1, digest="sha256:" + "0" * 64, inputs=("a.csv",),
    input_fingerprint="sha256:1", mapping={"x": ["a", "b"]}, keep=("id",), part_rows=10,
    format="parquet",
)  # fmt: skip
CHANGES = {
    "model": "n", "version": 2, "digest": "sha256:" + "1" * 64, "input_fingerprint": "sha256:2",
    "mapping": {"x": ["b", "a"]}, "keep": ("id", "ts"), "part_rows": 11, "format": "csv",
}  # fmt: skip


@pytest.mark.parametrize("name", FIXED)
def test_each_fixed_field_refuses_a_resume(name: str) -> None:
    with pytest.raises(Conflict, match=f"written with {name} "):
        BASE.check_resume(replace(BASE, **{name: CHANGES[name]}))


def test_progress_is_not_fixed_and_round_trips(tmp_path: Path) -> None:
    done = BASE.after_part(10, 2).after_part(5, 0)
    assert (done.parts_done, done.rows, done.scored, done.errors) == (2, 15, 13, 2)
    BASE.check_resume(done)
    done.save(Folder(str(tmp_path)))
    assert load(Folder(str(tmp_path))) == done
    assert load(Folder(str(tmp_path / "missing"))) is None
