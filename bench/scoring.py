"""What the other protocols cost against V2 JSON: one server, one model, the same row, each
protocol's body in turn (interleaved over rounds).

    .venv/bin/python bench/scoring.py [--duration 5] [--rounds 3]

The model is ``tiny-onnx`` (bench/models.py: one FP32 input of width F, no column names). Bodies
carry one row: V2 JSON ``{"inputs": [...]}`` (the baseline), MLflow ``/invocations`` with
``instances``, ``dataframe_split`` (columns matched by position) and CSV, and KServe V1
``:predict`` with ``instances``. wrk at c1 and c64; the printed ratio is each protocol's
requests/s over V2 JSON's in the same round (median over rounds), then its p50.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import models  # noqa: E402
from bench.commits import registry_home  # noqa: E402
from bench.throughput import Load, json_body, wrk  # noqa: E402
from tests.server import ServerProcess  # noqa: E402


def bodies(work: Path) -> dict[str, tuple[str, Path, str]]:
    """Protocol → (path, body file, content type), all carrying the same row."""
    row = models.rows(1)[0].round(4).tolist()
    columns = [f"f{i}" for i in range(len(row))]
    files = {
        "mlflow instances": {"instances": [row]},
        "mlflow dataframe_split": {"dataframe_split": {"columns": columns, "data": [row]}},
        "v1 instances": {"instances": [row]},
    }
    out = {"v2 json": ("/v2/models/tiny-onnx/infer", json_body(work), "application/json")}
    for name, body in files.items():
        path = work / (name.replace(" ", "-") + ".json")
        path.write_text(json.dumps(body))
        route = (
            "/v1/models/tiny-onnx:predict"
            if name.startswith("v1")
            else "/v2/models/tiny-onnx/invocations"
        )
        out[name] = (route, path, "application/json")
    csv = work / "row.csv"
    csv.write_text(",".join(columns) + "\n" + ",".join(map(str, row)) + "\n")
    out["mlflow csv"] = ("/v2/models/tiny-onnx/invocations", csv, "text/csv")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pitstop-scoring-"))
    home = registry_home(work)
    protocols = bodies(work)
    loads: dict[tuple[str, int], list[Load]] = {}
    with ServerProcess(home, {"PITSTOP_LOG_LEVEL": "warning"}) as server:
        for _ in range(args.rounds):
            for concurrency in (1, 64):
                for name, (route, body, media) in protocols.items():
                    load = wrk(
                        server.url + route, body, concurrency, args.duration, content_type=media
                    )
                    bad = {s: n for s, n in load.statuses.items() if s != 200}
                    assert not bad, f"{name}: {bad}"
                    loads.setdefault((name, concurrency), []).append(load)
    print(f"{'protocol':26} {'c':>3} {'requests/s':>11} {'vs v2 json':>10} {'p50 ms':>8}")
    for (name, concurrency), runs in loads.items():
        baseline = loads[("v2 json", concurrency)]
        ratio = statistics.median(r.rps / b.rps for r, b in zip(runs, baseline, strict=True))
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        print(f"{name:26} {concurrency:3} {rps:11.0f} {ratio:10.2f} {p50:8.2f}")


if __name__ == "__main__":
    main()
