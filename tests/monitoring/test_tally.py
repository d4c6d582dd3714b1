"""Counters shared by the workers of one server: cells by key, one file per worker, summed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pitstop.monitoring.histogram import Histogram
from pitstop.monitoring.inventory import Inventory, VersionView, forget, publish, summed
from pitstop.monitoring.requests import RequestRecorder
from pitstop.monitoring.tally import KEYS, FileTally, Kind, Tally, file_name, gather, retire
from pitstop.serving.statistics import Statistics


def test_a_key_gives_the_same_cells_every_time_and_refuses_another_shape() -> None:
    tally = Tally()
    cells = tally.cells(("a",), 3)
    cells[1] += 5
    assert tally.cells(("a",), 3)[1] == 5
    with pytest.raises(ValueError, match="3 sum cells"):
        tally.cells(("a",), 2)
    with pytest.raises(ValueError, match="3 sum cells"):
        tally.cells(("a",), 3, Kind.TOTAL)


@pytest.mark.parametrize(
    ("kind", "first", "second", "merged"),
    [
        (Kind.SUM, [1, 2], [10, 20], [11, 22]),
        (Kind.TOTAL, [0.5, 1.25], [0.25, 2.0], [0.75, 3.25]),
        (Kind.LATEST, [7, 3], [5, 9], [7, 9]),
    ],
)
def test_gather_merges_each_kind_of_cell(
    tmp_path: Path, kind: Kind, first: list[float], second: list[float], merged: list[float]
) -> None:
    for name, values in (("1", first), ("2", second)):
        FileTally(tmp_path, name).cells(("k", None, 3), 2, kind)[:] = values
    assert gather(tmp_path).cells(("k", None, 3), 2, kind).tolist() == merged


def test_a_killed_workers_counts_stay_in_the_sum(tmp_path: Path) -> None:
    """The cells are a shared mapping of the file: counted means written, even on SIGKILL."""
    script = (
        "import os, signal, sys; from pathlib import Path;"
        "from pitstop.monitoring.tally import FileTally;"
        "t = FileTally(Path(sys.argv[1]), 'dead'); c = t.cells(('requests',), 1);"
        "[c.__setitem__(0, c[0] + 1) for _ in range(1000)];"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False, timeout=60)
    assert run.returncode == -9
    FileTally(tmp_path, "alive").cells(("requests",))[0] += 1
    assert gather(tmp_path).cells(("requests",))[0] == 1001


def test_lines_being_written_and_mismatched_keys_are_skipped(tmp_path: Path) -> None:
    FileTally(tmp_path, "1").cells(("a",), 2)[:] = [1, 1]
    FileTally(tmp_path, "2").cells(("a",), 3)[:] = [2, 2, 2]  # another release's shape
    with (tmp_path / ("1" + KEYS)).open("ab") as keys:
        keys.write(b'{"key": ["b"], "at": 16, "si')  # a line being written
    merged = gather(tmp_path)
    assert list(merged) == [("a",)]
    assert merged.cells(("a",), 2).tolist() == [1, 1]


def test_a_full_file_keeps_counting_in_memory(tmp_path: Path) -> None:
    tally = FileTally(tmp_path, "1", capacity=16)
    shared = tally.cells(("a",), 2)
    alone = tally.cells(("b",))  # no room left: this worker's memory only
    shared[0] += 1
    alone[0] += 1
    assert tally.cells(("b",))[0] == 1
    assert list(gather(tmp_path)) == [("a",)]


def test_histograms_and_recorders_read_back_from_gathered_files(tmp_path: Path) -> None:
    for name in ("1", "2"):
        tally = FileTally(tmp_path, name)
        histogram = Histogram((0.1, 1.0), tally, ("h",))
        histogram.observe(0.05)
        histogram.observe_many(np.array([0.5, 5.0]))
        RequestRecorder(tally).series("m", 3).served("rest", 0.002, rows=4)
        Statistics(tally).of("m", 3).batch(8).add(1_000)
    merged = gather(tmp_path)
    histogram = Histogram((0.1, 1.0), merged, ("h",))
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 6)]
    assert histogram.total == pytest.approx(2 * 5.55)
    (series,) = RequestRecorder.over(merged)
    assert (series.model, series.version, series.rows) == ("m", 3, 8)
    assert series.requests("rest", "success") == 2
    (stats,) = Statistics.over(merged).select()
    assert stats.batch_sizes[8].to_json() == {"count": 2, "ns": 2_000}


def test_statistics_answer_from_every_worker_when_told_how_to_gather(tmp_path: Path) -> None:
    other = Statistics(FileTally(tmp_path, str(os.getpid() + 1)))
    other.of("m", 1).success.add(5)
    mine = Statistics(FileTally(tmp_path, str(os.getpid())), everyone=lambda: gather(tmp_path))
    mine.of("m", 1).success.add(7)
    (row,) = mine.select("m")
    assert row.success.to_json() == {"count": 2, "ns": 12}


def test_retire_zeroes_a_dead_workers_gauges_and_keeps_its_counters(tmp_path: Path) -> None:
    dead = FileTally(tmp_path, file_name(41))
    dead.cells(("inventory", "m", 1), 2, Kind.LIVE)[:] = [3, 2]
    dead.cells(("requests",))[0] = 7
    FileTally(tmp_path, file_name(42)).cells(("inventory", "m", 1), 2, Kind.LIVE)[:] = [1, 0]
    FileTally(tmp_path, file_name(411)).cells(("inventory", "m", 1), 2, Kind.LIVE)[:] = [5, 0]
    retire(tmp_path, 41)
    retire(tmp_path, 999)  # never started
    merged = gather(tmp_path)
    assert merged.cells(("inventory", "m", 1), 2, Kind.LIVE).tolist() == [6, 0]
    assert merged.cells(("requests",))[0] == 7


def test_every_workers_inventory_numbers_are_summed(tmp_path: Path) -> None:
    def inventory(inflight: int, fallbacks: int, held: bool = True) -> Inventory:
        views = (VersionView("m", 1, "sha256:0", "onnx", "READY", inflight, 1, 0.1),)
        return Inventory(
            versions=views if held else (),
            fallbacks={("m", "error"): fallbacks},
            shadow_requests={("m", "2"): (fallbacks, 1)},
            load_failures={"m": 1},
            registry_failures=2,
        )

    publish(inventory(inflight=3, fallbacks=5), FileTally(tmp_path, "1"))
    other = FileTally(tmp_path, "2")
    publish(inventory(inflight=4, fallbacks=6), other)
    mine = inventory(inflight=9, fallbacks=0)
    total = summed(mine, gather(tmp_path))
    assert [(v.inflight, v.queued) for v in total.versions] == [(7, 2)]
    assert total.fallbacks == {("m", "error"): 11}
    assert total.shadow_requests == {("m", "2"): (11, 2)}
    assert (total.load_failures, total.registry_failures) == ({"m": 2}, 4)
    forget(other, held=set())  # worker 2 unloaded v1: its gauges stop counting
    assert [v.inflight for v in summed(mine, gather(tmp_path)).versions] == [3]
