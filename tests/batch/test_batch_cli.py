"""``pitstop batch`` as a user runs it: real files in and out, a registry on SQLite, the CLI as a
subprocess. Predictions are checked against onnxruntime run directly on the same model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from pitstop.batch.table import read_output
from tests import model_factory as mf
from tests.server import open_registry

pytestmark = pytest.mark.timeout(180)

ROWS = 2_000

SLOW_HANDLER = '''\
import time

import numpy as np


class Model:
    """y = 2 * x, a few milliseconds per call (so a run can be caught half way); a row whose
    first value is -1 makes the call fail."""

    def predict(self, inputs):
        time.sleep(0.003)
        x = inputs["x"]
        if (x[:, 0] == -1).any():
            raise ValueError("poisoned row")
        return {"y": (x * 2).astype(np.float32)}
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with iris (ONNX) v1 production and v2 staging, and ``slow`` (python)."""
    root = tmp_path_factory.mktemp("batch")
    with open_registry(root / "home") as registry:
        for number, alias in ((1, "production"), (2, "staging")):
            folder = mf.make_onnx_package(root / f"iris{number}")
            (folder / "notes.txt").write_text(str(number))
            registry.push(folder, name="iris", aliases=[alias], actor="ci")
        slow = mf.make_python_package(root / "slow", source=SLOW_HANDLER)
        registry.push(slow, name="slow", aliases=["production"], actor="ci", trust_code=True)
    return root / "home"


def pitstop(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pitstop", *args],
        env={**os.environ, "PITSTOP_HOME": str(home)}, capture_output=True, text=True,
        timeout=150,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def iris_table(rows: int = ROWS) -> pa.Table:
    features = mf.iris_rows(rows)
    return pa.table({
        "id": pa.array(range(rows), type=pa.int64()),
        **{name: pa.array(features[:, i]) for i, name in enumerate("abcd")},
        "ts": pa.array([f"2026-12-0{1 + i % 3}" for i in range(rows)]),
    })  # fmt: skip


def write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pa_csv.write_csv(table, path)
    else:
        with path.open("w") as out:
            for row in table.to_pylist():
                out.write(json.dumps(row) + "\n")
    return path


def expected_labels(table: pa.Table) -> np.ndarray:
    session = onnxruntime.InferenceSession(mf.iris_onnx_bytes(zipmap=False))
    x = np.stack([table.column(c).to_numpy() for c in "abcd"], axis=1).astype(np.float32)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        ("in.csv", "parquet"),
        ("in.jsonl", "csv"),
        ("in.parquet", "jsonl"),
        ("in.parquet", "parquet"),
    ],
)
def test_every_format_in_and_out_with_ids_joined(
    home: Path, tmp_path: Path, source: str, fmt: str
) -> None:
    table = iris_table()
    path = write(table, tmp_path / source)
    out = tmp_path / "out"
    pitstop(home, "batch", "iris@production", str(path), str(out), "--format", fmt,
            "--keep", "id,ts", "--part-rows", "700", "--workers", "1")  # fmt: skip
    result = read_output(out)
    assert result.num_rows == ROWS
    assert result.column("id").to_pylist() == list(range(ROWS))  # input order, ids joined
    assert [str(v) for v in result.column("ts").to_pylist()] == table.column("ts").to_pylist()
    assert result.column("label").to_pylist() == expected_labels(table).tolist()
    with open_registry(home) as registry:
        digest = registry.version("iris", "production").digest
    assert set(result.column("pitstop_digest").to_pylist()) == {digest}
    assert {str(v) for v in result.column("pitstop_version").to_pylist()} == {"1"}
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-0000{i}.{fmt}" for i in range(3)]
    if fmt == "parquet":
        metadata = pq.read_schema(out / "part-00000.parquet").metadata
        assert metadata[b"pitstop.pitstop_digest"] == digest.encode()


def test_a_tensor_column_and_an_explicit_mapping(home: Path, tmp_path: Path) -> None:
    table = iris_table(300)
    x = np.stack([table.column(c).to_numpy() for c in "abcd"], axis=1)
    tensors = pa.table({"key": table.column("id"), "features": pa.array(x.tolist())})
    path = write(tensors, tmp_path / "t.parquet")
    out = tmp_path / "out"
    pitstop(home, "batch", "iris:1", str(path), str(out), "--column", "input=features",
            "--keep", "key", "--workers", "1")  # fmt: skip
    result = read_output(out)
    assert result.column("label").to_pylist() == expected_labels(table).tolist()
    assert result.column("key").to_pylist() == list(range(300))


def test_poisoned_rows_go_to_the_errors_file_and_the_rest_is_scored(
    home: Path, tmp_path: Path
) -> None:
    table = iris_table(1_000)
    rows = table.to_pylist()
    rows[123]["b"] = "oops"  # not a number
    del rows[456]["c"]  # a missing value
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out"
    pitstop(home, "batch", "iris@production", str(path), str(out), "--keep", "id",
            "--column", "input=a,b,c,d", "--part-rows", "400", "--workers", "1")  # fmt: skip
    errors = [json.loads(line) for p in sorted(out.glob("errors-*")) for line in p.open()]
    assert [e["row"] for e in errors] == [123, 456]
    assert "'b'" in errors[0]["error"]
    assert "'oops'" in errors[0]["error"]
    assert "'c'" in errors[1]["error"]
    assert "empty" in errors[1]["error"]
    ids = read_output(out).column("id").to_pylist()
    assert ids == [i for i in range(1_000) if i not in (123, 456)]


def test_a_row_the_model_fails_on_fails_alone(home: Path, tmp_path: Path) -> None:
    x = np.arange(400 * 4, dtype=np.float32).reshape(400, 4)
    x[77, 0] = -1
    path = write(
        pa.table({"id": list(range(400)), "x": pa.array(x.tolist())}), tmp_path / "x.parquet"
    )
    out = tmp_path / "out"
    pitstop(home, "batch", "slow", str(path), str(out), "--keep", "id", "--batch-size", "64",
            "--workers", "1")  # fmt: skip
    (error,) = [json.loads(line) for line in (out / "errors-00000.jsonl").open()]
    assert error["row"] == 77
    assert "poisoned row" in error["error"]
    result = read_output(out)
    assert result.column("id").to_pylist() == [i for i in range(400) if i != 77]
    assert np.allclose(np.asarray(result.column("y").to_pylist()), np.delete(x, 77, axis=0) * 2)


def test_max_errors_stops_the_job_with_a_clear_message(home: Path, tmp_path: Path) -> None:
    table = iris_table(1_000)
    frame = table.to_pylist()
    for row in frame[::10]:
        row["a"] = "bad"
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in frame))
    out = tmp_path / "out"
    stopped = pitstop(home, "batch", "iris", str(path), str(out), "--part-rows", "100",
                      "--keep", "id,ts", "--max-errors", "25", "--workers", "1",
                      check=False)  # fmt: skip
    assert stopped.returncode == 1
    assert "stopped: 30 rows failed, more than --max-errors 25" in stopped.stderr
    ledger = json.loads((out / "_pitstop_batch.json").read_text())
    assert (ledger["parts_done"], ledger["finished"]) == (3, False)
    fraction = pitstop(home, "batch", "iris", str(path), str(tmp_path / "out2"),
                       "--keep", "id,ts", "--max-errors", "0.05", "--workers", "1",
                       check=False)  # fmt: skip
    assert fraction.returncode == 1
    assert "more than --max-errors 0.05" in fraction.stderr
    history = json.loads(pitstop(home, "history", "iris", "--json").stdout)
    runs = [e for e in history if e["action"] == "batch.run"]
    assert "stopped" in runs[0]["after"]


def test_kill_9_half_way_then_resume_equals_an_uninterrupted_run(
    home: Path, tmp_path: Path
) -> None:
    rows = 6_000
    x = np.random.default_rng(7).random((rows, 4), dtype=np.float32)
    path = write(pa.table({"id": list(range(rows)), "x": pa.array(x.tolist())}),
                 tmp_path / "in" / "x.parquet")  # fmt: skip
    args = ["--keep", "id", "--batch-size", "20", "--part-rows", "200", "--workers", "1"]
    whole = tmp_path / "whole"
    pitstop(home, "batch", "slow", str(path.parent), str(whole), *args)

    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "pitstop", "batch", "slow", str(path.parent), str(out), *args],
        env={**os.environ, "PITSTOP_HOME": str(home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ledger = out / "_pitstop_batch.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ledger.exists() and json.loads(ledger.read_text())["parts_done"] >= 12:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    state = json.loads(ledger.read_text())
    assert 12 <= state["parts_done"] < 30
    assert not state["finished"]

    refused = pitstop(home, "batch", "slow@production", str(path.parent), str(out), *args,
                      "--format", "csv", "--resume", check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "format" in refused.stderr
    assert "parquet" in refused.stderr

    pitstop(home, "batch", "slow", str(path.parent), str(out), *args, "--resume")
    assert read_output(out).equals(read_output(whole))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())


def test_resuming_with_another_version_or_input_is_refused(home: Path, tmp_path: Path) -> None:
    path = write(iris_table(500), tmp_path / "in.csv")
    out = tmp_path / "out"
    keep = ("--keep", "id,ts")
    pitstop(home, "batch", "iris@production", str(path), str(out), *keep, "--workers", "1")
    other = pitstop(home, "batch", "iris@staging", str(path), str(out), *keep, "--resume",
                    "--workers", "1", check=False)  # fmt: skip
    assert other.returncode == 1
    assert "version 1, this run has 2" in other.stderr
    again = pitstop(home, "batch", "iris@production", str(path), str(out), *keep, check=False)
    assert again.returncode == 1
    assert "--resume" in again.stderr
    write(iris_table(501), path)  # the input changed
    changed = pitstop(home, "batch", "iris@production", str(path), str(out), *keep,
                      "--resume", check=False)  # fmt: skip
    assert changed.returncode == 1
    assert "input_fingerprint" in changed.stderr


def test_worker_processes_give_the_single_process_output(home: Path, tmp_path: Path) -> None:
    path = write(iris_table(5_000), tmp_path / "in.parquet")
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--keep", "id,ts", "--part-rows", "500", "--batch-size", "64"]
    pitstop(home, "batch", "iris", str(path), str(one), *common, "--workers", "1")
    pitstop(home, "batch", "iris", str(path), str(two), *common, "--workers", "2")
    assert read_output(one).equals(read_output(two))


def test_a_part_where_every_row_fails_keeps_the_output_columns(home: Path, tmp_path: Path) -> None:
    frame = iris_table(300).to_pylist()
    for row in frame[:100]:
        row["a"] = "bad"
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in frame))
    out = tmp_path / "out"
    pitstop(home, "batch", "iris", str(path), str(out), "--keep", "id,ts", "--part-rows", "100",
            "--workers", "1")  # fmt: skip
    first = pq.read_table(out / "part-00000.parquet")
    assert first.num_rows == 0
    assert first.schema.names == pq.read_table(out / "part-00001.parquet").schema.names
    assert read_output(out).column("id").to_pylist() == list(range(100, 300))


def test_a_kept_column_named_like_an_output_is_refused(home: Path, tmp_path: Path) -> None:
    table = iris_table(50).append_column("label", pa.array([0] * 50))
    path = write(table, tmp_path / "in.parquet")
    result = pitstop(home, "batch", "iris", str(path), str(tmp_path / "out"),
                     "--column", "input=a,b,c,d", "--keep", "id,label", check=False)  # fmt: skip
    assert result.returncode == 1
    assert "--keep label: the output has a column of that name" in result.stderr
