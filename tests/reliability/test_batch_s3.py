"""``pitstop batch`` reading its input from an S3-compatible store (SeaweedFS on 127.0.0.1),
streamed through pyarrow's S3 file system with the SDK's credentials and endpoint: a prefix of
Parquet files and a glob of CSV files give the local engine's results for the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from pitstop.batch.table import Folder, read_output
from pitstop.registry.s3_store import Prefix, connection_options
from tests import model_factory as mf
from tests.s3_server import S3Server
from tests.server import open_registry

pytestmark = pytest.mark.timeout(180)


def run(
    home: Path, env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pitstop", "batch", *args],
        env={**os.environ, **env, "PITSTOP_HOME": str(home)}, capture_output=True, text=True,
        timeout=150,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_an_s3_prefix_and_an_s3_glob_score_like_local_files(tmp_path: Path, s3: S3Server) -> None:
    home = tmp_path / "home"
    with open_registry(home) as registry:
        registry.push(mf.make_onnx_package(tmp_path / "pkg"), name="iris", aliases=["production"],
                      actor="ci")  # fmt: skip
    features = mf.iris_rows(900)
    table = pa.table({"id": list(range(900)),
                      **{c: pa.array(features[:, i]) for i, c in enumerate("abcd")}})  # fmt: skip
    local = tmp_path / "local"
    local.mkdir()
    prefix = f"batch-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    for number in range(3):
        piece = table.slice(number * 300, 300)
        pq.write_table(piece, local / f"p{number}.parquet")
        pa_csv.write_csv(piece, local / f"p{number}.csv")
        client.upload_file(str(local / f"p{number}.parquet"), "models",
                           f"{prefix}/parquet/p{number}.parquet")  # fmt: skip
        client.upload_file(str(local / f"p{number}.csv"), "models", f"{prefix}/csv/p{number}.csv")
    env = s3.env()
    args = ("--keep", "id", "--part-rows", "250", "--workers", "1")
    run(home, env, "iris", str(local / "p*.parquet"), str(tmp_path / "want"), *args)
    run(
        home, env, "iris", f"s3://models/{prefix}/parquet/", str(tmp_path / "pq"), *args
    )  # a prefix
    run(home, env, "iris", f"s3://models/{prefix}/csv/p*.csv", str(tmp_path / "csv"), *args)
    want = read_output(tmp_path / "want")
    assert want.num_rows == 900
    for got in ("pq", "csv"):
        result = read_output(tmp_path / got)
        assert result.column("id").to_pylist() == want.column("id").to_pylist()
        assert result.column("label").to_pylist() == want.column("label").to_pylist()


def test_parts_and_the_ledger_written_to_s3_resume_there(
    tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3 output prefix: a run stopped by --max-errors resumes in place, and the parts equal
    a local run's; a second run into the same prefix without --resume is refused."""
    home = tmp_path / "home"
    with open_registry(home) as registry:
        registry.push(mf.make_onnx_package(tmp_path / "pkg"), name="iris", aliases=["production"],
                      actor="ci")  # fmt: skip
    features = mf.iris_rows(600)
    rows = [{"id": i, **{c: float(features[i, j]) for j, c in enumerate("abcd")}}
            for i in range(600)]  # fmt: skip
    for row in rows[350:360]:
        row["a"] = "bad"
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = s3.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    target = f"s3://models/out-{uuid.uuid4().hex[:8]}/scored"
    args = ("--keep", "id", "--part-rows", "100", "--workers", "1")
    run(home, env, "iris", str(source), str(tmp_path / "want"), *args)
    stopped = run(home, env, "iris", str(source), target, *args, "--max-errors", "5", check=False)
    assert stopped.returncode == 1
    assert "stopped" in stopped.stderr
    refused = run(home, env, "iris", str(source), target, *args, check=False)
    assert refused.returncode == 1
    assert "not empty" in refused.stderr
    run(home, env, "iris", str(source), target, *args, "--max-errors", "100", "--resume")
    folder = Folder(target, connection_options, Prefix)
    assert read_output(folder).equals(read_output(tmp_path / "want"))
    assert [n for n in folder.names() if n.startswith("errors-")] == ["errors-00003.jsonl"]
    assert json.loads(folder.read("_pitstop_batch.json") or b"{}")["finished"] is True
