"""Push and fetch through the S3 artifact store against the bare SDK, on a local SeaweedFS.

    .venv/bin/python bench/artifacts.py [--mib 256] [--rounds 3]

One artifact of ``--mib`` MiB (one large file and a few small ones) is pushed with
``S3ArtifactStore.put`` (hash while copying into the host cache, multipart upload, file list)
and fetched on a second "host" with ``local_path`` (download into its cache, verify every file
against the stored list). The baseline is the same bytes moved by boto3 alone (``upload_file``
and ``download_file`` with the same transfer settings, no hashing): the ratio is what pitstop's
integrity checks and cache cost on top of the transfer. Medians over rounds, one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pitstop.registry import scan  # noqa: E402
from pitstop.registry.artifact_cache import ArtifactCache  # noqa: E402
from pitstop.registry.s3_store import S3ArtifactStore  # noqa: E402
from tests.s3_server import S3Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-") as tmp:
        work = Path(tmp)
        server = S3Server(work / "weed").start()
        try:
            run(server, work, args.mib, args.rounds)
        finally:
            server.stop()


def run(server: S3Server, work: Path, mib: int, rounds: int) -> None:
    client = server.client()
    client.create_bucket(Bucket="bench")
    folder = work / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(os.urandom(mib * 1024 * 1024))
    for n in range(4):
        (folder / f"small-{n}.json").write_bytes(os.urandom(4096))
    size = sum(p.stat().st_size for p in folder.iterdir())
    times: dict[str, list[float]] = {"put": [], "fetch": [], "sdk up": [], "sdk down": []}
    for round_ in range(rounds):
        prefix = f"r{round_}-{uuid.uuid4().hex[:6]}"
        pusher = S3ArtifactStore("bench", prefix, ArtifactCache(work / f"a{round_}", 1 << 40),
                                 client=client)  # fmt: skip
        fetcher = S3ArtifactStore("bench", prefix, ArtifactCache(work / f"b{round_}", 1 << 40),
                                  client=client)  # fmt: skip
        started = time.perf_counter()
        digest, entries = scan(folder)
        pusher.put(folder, digest, entries)
        times["put"].append(time.perf_counter() - started)
        started = time.perf_counter()
        fetcher.local_path(digest)
        times["fetch"].append(time.perf_counter() - started)
        transfer = pusher._transfer_config()  # the same multipart settings
        started = time.perf_counter()
        for path in folder.iterdir():
            client.upload_file(str(path), "bench", f"sdk-{prefix}/{path.name}", Config=transfer)
        times["sdk up"].append(time.perf_counter() - started)
        target = work / f"sdk-{round_}"
        target.mkdir()
        started = time.perf_counter()
        for path in folder.iterdir():
            client.download_file("bench", f"sdk-{prefix}/{path.name}", str(target / path.name),
                                 Config=transfer)  # fmt: skip
        times["sdk down"].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    mb = size / 1e6
    for name, seconds in median.items():
        print(f"{name:9} {seconds:7.3f} s  {mb / seconds:7.1f} MB/s")
    print(f"push  (scan + put) / SDK upload   {median['put'] / median['sdk up']:.2f}")
    print(f"fetch (download + verify) / SDK download  {median['fetch'] / median['sdk down']:.2f}")


if __name__ == "__main__":
    main()
