"""``pitstop serve`` hosting stream consumers (``PITSTOP_STREAMS``) beside HTTP and gRPC: an
alias moved mid-stream loses nothing and the answers switch version within a second; the
stream's figures are on the server's ``/metrics``; its requests are counted like HTTP's."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from tests import handler_models as hm
from tests.server import ServerProcess, open_registry, wait_for
from tests.stream.brokers import Streams

pytestmark = pytest.mark.timeout(120)

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_alias_flip_mid_stream_loses_nothing_and_switches_within_a_second(
    tmp_path: Path, where: Streams
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with open_registry(home) as registry:
        hm.push(registry, tmp_path / "v1", "score", hm.SCORE, "production")
        hm.push(registry, tmp_path / "v2", "score", hm.SHIFTED, "staging")
    spec = {"model": "score", "from": where.source_url, "to": where.to_url,
            "dead_letter": where.dead_url, "max_wait_ms": 2}  # fmt: skip
    server = ServerProcess(home, env={"PITSTOP_STREAMS": orjson.dumps([spec]).decode()}).start()
    keys: list[str] = []
    try:
        assert wait_for(lambda: "consuming" in server.logs(), 30), server.logs()[-2000:]
        started = time.monotonic()
        flipped_at = 0.0
        while time.monotonic() - started < 4.0:  # ~400 messages a second, for 4 s
            keys += where.publish([orjson.dumps(ROW)] * 8)
            if not flipped_at and time.monotonic() - started > 2.0:
                with open_registry(home) as registry:
                    registry.set_alias("score", "production", 2, actor="t")
                flipped_at = time.time()
            time.sleep(0.02)
        settled = lambda: len(where.answers()) >= len(keys)  # noqa: E731
        assert wait_for(settled, 30, interval=0.3), server.logs()[-2000:]
        text = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert server.stop() == 0
    finally:
        server.stop()
    answers = where.answers()
    assert Counter(a.key for a in answers) == Counter(keys)  # each exactly once: 0 lost
    assert where.dead() == []
    versions = {a.key: a.headers["Pitstop-Model-Version"] for a in answers}
    late = [versions[a.key] for a in answers if a.stored_s > flipped_at + 1.0]
    early = [versions[a.key] for a in answers if a.stored_s < flipped_at]
    assert late
    assert set(late) == {"2"}, Counter(late)  # every answer a second after the flip: v2
    assert set(early) == {"1"}
    shifted = [orjson.loads(a.body) for a in answers if versions[a.key] == "2"]
    assert shifted[0]["outputs"][0]["data"] == [15.0]  # v2's answer, not v1's label
    # The server's own /metrics: the stream's figures and its requests beside HTTP's.
    labels = {"model": "score", "outcome": "answered"}
    assert metric(text, "pitstop_stream_messages_total", **labels) == len(keys)
    assert metric(text, "pitstop_stream_messages_total", model="score", outcome="consumed") >= (
        len(keys)
    )
    assert metric(text, "pitstop_stream_processing_seconds_count", model="score") == len(keys)
    assert metric(text, "pitstop_requests_total", model="score", transport="stream") > 0
    assert "pitstop_stream_pending{" in text


def test_a_server_whose_stream_cannot_start_says_why_and_exits(tmp_path: Path) -> None:
    from tests.stream.brokers import NATS_URL

    home = tmp_path / "home"
    home.mkdir()
    with open_registry(home) as registry:
        hm.push(registry, tmp_path / "v1", "score", hm.SCORE, "production")
    spec = {"model": "score", "from": f"{NATS_URL}/pt-none.in", "to": f"{NATS_URL}/pt-none.out"}
    server = ServerProcess(home, env={"PITSTOP_STREAMS": orjson.dumps([spec]).decode()})
    with pytest.raises(RuntimeError, match="exited with 1") as caught:
        server.start(timeout=30)
    assert "error: from: no JetStream stream stores 'pt-none.in'" in str(caught.value)
    assert "Traceback" not in str(caught.value)
